#!/usr/bin/env python3
"""Time to first byte of fresh TCP connections: connect, send 4 bytes, read their echo, close;
one connection every GAP seconds. Prints p50 and p99.

    bench/scripts/ttfb.py PORT [COUNT] [GAP]

Used to compare `ringway access` with and without --warm against a direct TCP connection to
the echo origin (all on 127.0.0.1).
"""

import socket
import sys
import time


def main(port, n=200, gap=0.12):
    ts = []
    for i in range(n):
        t0 = time.perf_counter()
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"ping")
        got = b""
        while len(got) < 4:
            d = s.recv(16)
            if not d:
                raise SystemExit(f"connection {i} closed after {got!r}")
            got += d
        ts.append(time.perf_counter() - t0)
        s.close()
        time.sleep(gap)
    ts.sort()
    print(f"p50 {ts[len(ts) // 2] * 1e6:.0f} us p99 {ts[int(len(ts) * 0.99)] * 1e6:.0f} us")


if __name__ == "__main__":
    main(int(sys.argv[1]), *(int(a) if i == 0 else float(a) for i, a in enumerate(sys.argv[2:])))
