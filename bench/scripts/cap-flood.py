# bench/scripts/cap-flood.py RINGWAY RINGBENCH: attacks a route's connection cap. 100 tunnels
# hold a route's max_tunnels (one worker); waves of 200 more upgrades hit it for 2.4 s (each must
# get 503 with Retry-After) while a tunnel on another route of the same worker, in a process of
# its own, measures 64 B echo latency every 5 ms. Prints the statuses, whether the held tunnels
# still echo, and the measuring tunnel's p50/p99 quiet and during the flood.
import asyncio, os, socket, subprocess, sys, tempfile, time, statistics
RW = sys.argv[1]; RB = sys.argv[2]
D = tempfile.mkdtemp(prefix="cap-flood.")
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
OP, P = free(), free()
origin = subprocess.Popen([RB, "origin", "--listen", f"127.0.0.1:{OP}", "--mode", "echo"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
cfg = f"""workers = 1
[control]
socket = "{D}/c.sock"
state = ""
[[listener]]
addr = "127.0.0.1:{P}"
[[route]]
path = "/capped"
origin = "127.0.0.1:{OP}"
max_tunnels = 100
[[route]]
path = "/echo"
origin = "127.0.0.1:{OP}"
"""
open(f"{D}/r.toml", "w").write(cfg)
rw = subprocess.Popen([RW, "run", "--config", f"{D}/r.toml"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
time.sleep(0.5)
REQ = lambda path: (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
async def upgrade(path):
    r, w = await asyncio.open_connection("127.0.0.1", P)
    w.write(REQ(path)); await w.drain()
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
    return int(head.split()[1]), head, r, w
def frame(payload):  # masked binary frame, zero mask
    return bytes([0x82, 0x80 | len(payload)]) + b"\0\0\0\0" + payload
async def measure(stop, out):
    st, _, r, w = await upgrade("/echo"); assert st == 101
    while not stop.is_set():
        t = time.perf_counter(); w.write(frame(b"x" * 64)); await w.drain()
        await asyncio.wait_for(r.readexactly(66), 10); out.append((time.perf_counter() - t) * 1e6)
        await asyncio.sleep(0.005)
def measurer(seconds, q):
    out = []
    async def run():
        stop = asyncio.Event()
        t = asyncio.create_task(measure(stop, out)); await asyncio.sleep(seconds); stop.set(); await t
    asyncio.run(run()); q.put(out)
async def main():
    import multiprocessing as mp
    held = [await upgrade("/capped") for _ in range(100)]
    assert all(h[0] == 101 for h in held), [h[0] for h in held if h[0] != 101][:3]
    quiet, flood = [], []
    stop = asyncio.Event(); m = asyncio.create_task(measure(stop, quiet)); await asyncio.sleep(2); stop.set(); await m
    mq = mp.Queue(); mproc = mp.Process(target=measurer, args=(3.0, mq)); mproc.start()
    await asyncio.sleep(0.3)
    statuses = {}; retry = 0; t0 = time.time()
    while time.time() - t0 < 2.4:
        res = await asyncio.gather(*[upgrade("/capped") for _ in range(200)], return_exceptions=True)
        for x in res:
            if isinstance(x, Exception): statuses[type(x).__name__] = statuses.get(type(x).__name__, 0) + 1; continue
            statuses[x[0]] = statuses.get(x[0], 0) + 1; retry += b"Retry-After: 1" in x[1]; x[3].close()
    dt = time.time() - t0; flood = mq.get(); mproc.join()
    # the held ones still echo
    ok = 0
    for st, _, r, w in held:
        w.write(frame(b"y" * 10)); await w.drain(); ok += (await asyncio.wait_for(r.readexactly(12), 10))[2:] == b"y" * 10
    q = lambda v, p: statistics.quantiles(v, n=100)[p - 1]
    print(f"flood: {sum(statuses.values())} upgrades in {dt:.2f} s: {statuses}, Retry-After on {retry}; held tunnels still echoing: {ok}/100")
    print(f"measuring tunnel 64 B echo: quiet p50 {q(quiet,50):.0f} us p99 {q(quiet,99):.0f} us (n={len(quiet)}); during flood p50 {q(flood,50):.0f} us p99 {q(flood,99):.0f} us (n={len(flood)})")
try:
    asyncio.run(main())
finally:
    rw.terminate(); origin.terminate(); rw.wait(); origin.wait()
