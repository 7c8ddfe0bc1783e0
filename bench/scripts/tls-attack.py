#!/usr/bin/env python3
"""TLS attack against one ringway worker (by hand): `tls-attack.py 1` runs 30 wss:// clients that
send 64 KiB messages and never read plus 2 TLS Ping floods; `tls-attack.py 0` is a normal client
that echoes 64 B every 10 ms for 8 s and prints p50/p99/max. Run the attack in one process and
the normal client in another, against `ringway run` with a wss listener on 127.0.0.1:19701 (route
/echo to an echo origin), from a directory holding the test CA as ca.pem."""
import asyncio, ssl, sys, time, os, websockets
URL = "wss://localhost:19701/echo"
def ctx():
    c = ssl.create_default_context(cafile="ca.pem"); return c
async def normal(dur):
    async with websockets.connect(URL, ssl=ctx()) as ws:
        ts = []; end = time.monotonic() + dur
        while time.monotonic() < end:
            t0 = time.perf_counter(); await ws.send(b"x"*64); await ws.recv(); ts.append(time.perf_counter()-t0)
            await asyncio.sleep(0.01)
        ts.sort(); return ts[len(ts)//2]*1e3, ts[int(len(ts)*0.99)]*1e3, ts[-1]*1e3, len(ts)
async def never_reads(stop):
    try:
        async with websockets.connect(URL, ssl=ctx(), max_queue=1, write_limit=2**16) as ws:
            chunk = os.urandom(65536)
            while not stop.is_set():
                await asyncio.wait_for(ws.send(chunk), 60)
    except Exception as e:
        return type(e).__name__
async def pinger(stop):
    try:
        async with websockets.connect(URL, ssl=ctx()) as ws:
            n = 0
            while not stop.is_set():
                await ws.ping(os.urandom(8)); n += 1
    except Exception as e:
        return type(e).__name__
async def main(attack):
    stop = asyncio.Event(); tasks = []
    if attack:
        tasks = [asyncio.create_task(never_reads(stop)) for _ in range(30)] + [asyncio.create_task(pinger(stop)) for _ in range(2)]
        await asyncio.sleep(3)
    if attack:
        await asyncio.sleep(14)
        stop.set()
        print("attackers:", [t.result() if t.done() else "running" for t in tasks][:5], flush=True)
    else:
        r = await normal(8)
        print("normal p50 %.2f ms p99 %.2f ms max %.1f ms (%d samples)" % r, flush=True)
    for t in tasks: t.cancel()
asyncio.run(main(sys.argv[1] == "1"))
