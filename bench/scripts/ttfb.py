#!/usr/bin/env python3
"""Time to first byte of fresh TCP connections: connect, send 4 bytes, read their echo, close;
one connection every GAP seconds. Prints p50 and p99.

    bench/scripts/ttfb.py PORT [COUNT] [GAP]
    bench/scripts/ttfb.py --open PORT [COUNT] [GAP]

With --open: one connection, opened first; every GAP seconds 4 bytes and their echo on it, so
the figure is the round trip through whatever relays sit on the path while they are idle, with no
connect in it.

Used to compare `ringway access` with and without --warm against a direct TCP connection to
the echo origin, and against two plain TCP relays (all on 127.0.0.1).
"""

import socket
import sys
import time


def echo(s, i):
    s.sendall(b"ping")
    got = b""
    while len(got) < 4:
        d = s.recv(16)
        if not d:
            raise SystemExit(f"round trip {i} closed after {got!r}")
        got += d


def fresh(port, n, gap):
    ts = []
    for i in range(n):
        t0 = time.perf_counter()
        s = socket.create_connection(("127.0.0.1", port))
        echo(s, i)
        ts.append(time.perf_counter() - t0)
        s.close()
        time.sleep(gap)
    return ts


def on_open(port, n, gap):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    echo(s, -1)
    ts = []
    for i in range(n):
        time.sleep(gap)
        t0 = time.perf_counter()
        echo(s, i)
        ts.append(time.perf_counter() - t0)
    s.close()
    return ts


def main(argv):
    run = fresh
    if argv and argv[0] == "--open":
        run, argv = on_open, argv[1:]
    port = int(argv[0])
    n = int(argv[1]) if len(argv) > 1 else 200
    gap = float(argv[2]) if len(argv) > 2 else 0.12
    ts = sorted(run(port, n, gap))
    print(f"p50 {ts[len(ts) // 2] * 1e6:.0f} us p99 {ts[int(len(ts) * 0.99)] * 1e6:.0f} us")


if __name__ == "__main__":
    main(sys.argv[1:])
