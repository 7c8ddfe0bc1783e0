"""PostgreSQL over a WebSocket, the way serverless runtimes do it: the pg8000 driver (PyPI,
third-party) speaks the wire protocol (startup, SCRAM-SHA-256, simple and extended queries,
COPY) over a `websockets` connection to ringway, which splices it into PostgreSQL's TCP port.

    pg_ws.py URL CAFILE USER PASSWORD DATABASE

Exits 0 only when every check passed; prints what it measured.
"""

import hashlib
import io
import os
import ssl
import sys
import time

import pg8000.native
from websockets.sync.client import connect


class WebSocketStream:
    """The file-like object pg8000 reads and writes (what `socket.makefile("rwb")` gives)."""

    def __init__(self, ws):
        self.ws = ws
        self.inbox = bytearray()
        self.outbox = bytearray()

    def read(self, size):
        while len(self.inbox) < size:
            self.inbox += self.ws.recv(timeout=60)
        out = bytes(self.inbox[:size])
        del self.inbox[:size]
        return out

    def write(self, data):
        self.outbox += data
        return len(data)

    def flush(self):
        if self.outbox:
            self.ws.send(bytes(self.outbox))
            self.outbox.clear()

    def close(self):
        pass


class WebSocketSocket:
    """The socket-like object pg8000 accepts as `sock`."""

    def __init__(self, ws):
        self.ws = ws

    def makefile(self, mode):
        return WebSocketStream(self.ws)

    def close(self):
        self.ws.close()


def main(url, cafile, user, password, database):
    ctx = ssl.create_default_context(cafile=cafile)
    ws = connect(url, ssl=ctx, max_size=None, subprotocols=["binary"])
    # The WebSocket is the TLS layer (wss://), as with serverless drivers: no SSLRequest inside.
    con = pg8000.native.Connection(
        user, password=password, database=database, sock=WebSocketSocket(ws), ssl_context=False
    )
    assert con.run("SELECT 1 + 1")[0][0] == 2

    con.run("CREATE TABLE rows (id int PRIMARY KEY, v text NOT NULL)")
    values = [f"row {i} {os.urandom(8).hex()}" for i in range(10_000)]
    started = time.monotonic()
    con.run("BEGIN")
    for chunk in range(0, len(values), 1000):
        part = values[chunk : chunk + 1000]
        params = {f"v{j}": v for j, v in enumerate(part)}
        rows = ", ".join(f"({chunk + j}, :v{j})" for j in range(len(part)))
        con.run(f"INSERT INTO rows (id, v) VALUES {rows}", **params)
    con.run("COMMIT")
    ours = hashlib.md5(",".join(values).encode()).hexdigest()
    theirs = con.run("SELECT md5(string_agg(v, ',' ORDER BY id)) FROM rows")[0][0]
    assert ours == theirs, (ours, theirs)
    assert con.run("SELECT count(*) FROM rows")[0][0] == 10_000
    back = [r[0] for r in con.run("SELECT v FROM rows ORDER BY id")]
    assert back == values
    print(f"10,000 rows in one transaction, checksums equal ({time.monotonic() - started:.2f} s)")

    blob = os.urandom(1 << 20)
    con.run("CREATE TABLE blobs (b bytea)")
    con.run("INSERT INTO blobs VALUES (:b)", b=blob)
    assert con.run("SELECT b FROM blobs")[0][0] == blob
    print("1 MiB bytea round trip equal")

    out = io.BytesIO()
    started = time.monotonic()
    con.run(
        "COPY (SELECT repeat(md5(i::text), 16) FROM generate_series(1, 100000) i) TO STDOUT",
        stream=out,
    )
    copied = out.getvalue()
    expected = con.run(
        "SELECT sum(length(repeat(md5(i::text), 16)) + 1) FROM generate_series(1, 100000) i"
    )[0][0]
    assert len(copied) == expected, (len(copied), expected)
    print(f"COPY TO STDOUT: {len(copied) / 1e6:.1f} MB in {time.monotonic() - started:.2f} s")

    con.close()
    print("ok")


if __name__ == "__main__":
    main(*sys.argv[1:6])
