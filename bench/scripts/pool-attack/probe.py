# probe.py PORT SECONDS OUT: one tunnel on /echo, a 16 B echo every 5 ms, latencies (t, ms) to OUT as JSON.
import socket, sys, time, json, os
P, SECS, OUT = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
REQ = (b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
s = socket.create_connection(("127.0.0.1", P)); s.sendall(REQ)
buf = b""
while b"\r\n\r\n" not in buf: buf += s.recv(4096)
assert buf.split()[1] == b"101", buf
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
out = []; end = time.time() + SECS
fr = bytes([0x82, 0x80 | 16]) + b"\0\0\0\0" + b"p" * 16
while time.time() < end:
    t0 = time.perf_counter(); s.sendall(fr); got = b""
    while len(got) < 18: got += s.recv(64)
    out.append((time.time(), (time.perf_counter() - t0) * 1e3)); time.sleep(0.005)
json.dump(out, open(OUT, "w"))
