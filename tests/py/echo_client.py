#!/usr/bin/env python3
"""Echo client for Ringway's end-to-end suite, driven by Python's `websockets` library.

Usage: echo_client.py ws://127.0.0.1:PORT/echo

Offers subprotocol `binary` and checks it is echoed; sends binary messages of several sizes and
one text message through the tunnel and checks each echo byte-exact (the server may re-frame a
byte stream, so it reads binary messages until the byte count is reached; a text message comes
back as its UTF-8 bytes); pings and checks the pong; closes with 1000 and checks the server's
Close carried 1000. Exits 1 with a message on any mismatch. Every wait is bounded. Uses the
asyncio client API, which both websockets 10.x (Debian's python3-websockets) and current
releases provide.
"""

import asyncio
import random
import sys

import websockets

STEP = 10.0
SIZES = [1, 125, 126, 65535, 65536, 1 << 20]
TEXT = "h\u00e9llo ringway \u2713"


class Mismatch(Exception):
    pass


async def read_exact(ws, n):
    """Reads binary messages until exactly n bytes have arrived (at most STEP seconds)."""
    got = bytearray()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP
    while len(got) < n:
        left = deadline - loop.time()
        if left <= 0:
            raise Mismatch(f"only {len(got)} of {n} echoed bytes within {STEP}s")
        msg = await asyncio.wait_for(ws.recv(), left)
        if isinstance(msg, str):
            raise Mismatch(f"got a text message {msg[:40]!r}; echoes must be binary")
        got += msg
    if len(got) != n:
        raise Mismatch(f"expected {n} echoed bytes, got {len(got)}")
    return bytes(got)


async def run(url):
    async with websockets.connect(
        url,
        subprotocols=["binary"],
        max_size=None,
        open_timeout=STEP,
        close_timeout=STEP,
        ping_interval=None,
    ) as ws:
        if ws.subprotocol != "binary":
            raise Mismatch(f"subprotocol not echoed: {ws.subprotocol!r}")

        for size in SIZES:
            payload = random.Random(size).randbytes(size)
            await asyncio.wait_for(ws.send(payload), STEP)
            if await read_exact(ws, size) != payload:
                raise Mismatch(f"echo of the {size}-byte binary message differs")

        await asyncio.wait_for(ws.send(TEXT), STEP)
        encoded = TEXT.encode("utf-8")
        if await read_exact(ws, len(encoded)) != encoded:
            raise Mismatch("echo of the text message differs from its UTF-8 bytes")

        pong = await asyncio.wait_for(ws.ping(b"py-ping"), STEP)
        await asyncio.wait_for(pong, STEP)

        await asyncio.wait_for(ws.close(code=1000, reason="done"), 2 * STEP)
        if ws.close_code != 1000:
            raise Mismatch(f"server's Close carried {ws.close_code!r}, expected 1000")


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        asyncio.run(asyncio.wait_for(run(sys.argv[1]), 60))
    except Exception as e:  # any failure, including timeouts and protocol errors, is a mismatch
        print(f"echo_client: FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"echo_client: ok (websockets {websockets.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
