# A WebSocket tunnel client that tells apart how a tunnel failed.
import asyncio, time, struct
def mkreq(path): return (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
def frame(payload, op=0x2, mask=b"\x01\x02\x03\x04"):
    n = len(payload); hdr = bytes([0x80 | op])
    if n < 126: hdr += bytes([0x80 | n])
    else: hdr += bytes([0x80 | 126]) + struct.pack(">H", n)
    return hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
async def read_frame(r):
    h = await r.readexactly(2); op = h[0] & 0x0f; n = h[1] & 0x7f
    if n == 126: n = struct.unpack(">H", await r.readexactly(2))[0]
    elif n == 127: n = struct.unpack(">Q", await r.readexactly(8))[0]
    return op, await r.readexactly(n)
async def tunnel(P, path, payload=b"ping-0123456789", timeout=5.0, skip_prefix=0, hold=0.0):
    """Returns (status, detail, setup_s). status: ok | http-XXX | closed-before-echo | eof-after-101 |
    timeout | connect-error | bad-echo."""
    t0 = time.perf_counter(); w = None
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", P), timeout)
        w.write(mkreq(path)); await w.drain()
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), timeout)
        st = head.split()[1].decode(); ts = time.perf_counter() - t0
        if st != "101": return (f"http-{st}", "", ts)
        w.write(frame(payload)); await w.drain()
        got = b""
        while len(got) < skip_prefix + len(payload):
            op, d = await asyncio.wait_for(read_frame(r), timeout)
            if op == 0x8:
                code = struct.unpack(">H", d[:2])[0] if len(d) >= 2 else None
                return ("closed-before-echo", f"{code} {d[2:60]!r} got={got[:40]!r}", ts)
            if op in (0x1, 0x2, 0x0): got += d
        if got[skip_prefix:skip_prefix + len(payload)] != payload: return ("bad-echo", repr(got[:60]), ts)
        if hold: await asyncio.sleep(hold)
        return ("ok", "", ts)
    except asyncio.TimeoutError: return ("timeout", "", time.perf_counter() - t0)
    except asyncio.IncompleteReadError: return ("eof-after-101" if 'st' in dir() else "eof", "", time.perf_counter() - t0)
    except (ConnectionError, OSError) as e: return ("connect-error", str(e), time.perf_counter() - t0)
    finally:
        if w is not None:
            try:
                w.write(frame(b"\x03\xe8", op=0x8)); 
            except Exception: pass
            w.close()
async def load(P, path, total, conc, **kw):
    res = []; sem = asyncio.Semaphore(conc)
    async def one():
        async with sem: res.append(await tunnel(P, path, **kw))
    await asyncio.gather(*[one() for _ in range(total)])
    return res
def summary(res):
    k = {}
    for st, d, _ in res: k[st] = k.get(st, 0) + 1
    return k
