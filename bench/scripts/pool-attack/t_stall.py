# Worker stall when many connecting tunnels are torn down at once (mass connect timeout, or
# clients that all leave), measured by a probe tunnel on another route of the same worker.
# usage: t_stall.py N MODE POOL   MODE: timeout | abort   POOL: race (pool [H0, H1], race 10 ms)
#        | norace (pool [H0], race_after_ms = 0)
import os, sys, random; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import *
N = int(sys.argv[1]); MODE = sys.argv[2]; POOL = sys.argv[3]
H0, H1, E = Hang("H0"), Hang("H1"), Echo("E")
pool = [H0.port, H1.port] if POOL == "race" else [H0.port]
extra = ("race_after_ms = 10\n" if POOL == "race" else "race_after_ms = 0\n") + "max_ejected_percent = 0\n" + \
        f'[[route]]\npath = "/echo"\norigin = "127.0.0.1:{E.port}"\n'
label = f"stall-{N}-{MODE}-{POOL}"
rw = Ringway(label, config(label, free(), pool, extra, connect_ms=3000))
try:
    pj = f"{W}/run/{label}.probe.json"
    probe = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe.py"), str(rw.P), "9", pj])
    time.sleep(1.0)
    async def go():
        conns = []
        async def open_one():
            try:
                r, w = await asyncio.open_connection("127.0.0.1", rw.P); w.write(REQ); await w.drain(); conns.append((r, w))
            except Exception: pass
        await asyncio.gather(*[open_one() for _ in range(N)])
        t_open = time.time()
        if os.environ.get("PERF"):
            subprocess.Popen(["perf", "record", "-F", "999", "-g", "-p", str(rw.pid), "-o", f"{W}/run/{label}.perf", "--", "sleep", os.environ["PERF"]],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if MODE == "abort":
            await asyncio.sleep(max(0, 1.5 - (time.time() - t_open)))
            t_act = time.time()
            for r, w in conns:
                w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); w.close()
        else:
            t_act = t_open + 3.0
            await asyncio.sleep(5)
            for r, w in conns: w.close()
        return t_open, t_act
    t_open, t_act = asyncio.run(go())
    probe.wait(20)
    lat = json.load(open(pj))
    before = [m for t, m in lat if t < t_open - 0.2]
    n, _ = wait_settle(rw, 0, 30)
    import calendar
    ts = lambda d: calendar.timegm(time.strptime(d["timestamp"][:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + d["timestamp"][19:-1])
    ends = [ts(json.loads(l)) for l in rw.grep('"upgrade refused"|"tunnel closed"') if '"/db"' in l]
    t_first = min(ends) if ends else t_act
    after = [(t - t_first, m) for t, m in lat if t >= t_first - 0.2]
    gaps = [(lat[i][0] - t_first, (lat[i][0] - lat[i-1][0]) * 1e3) for i in range(1, len(lat))]
    top = sorted(after, key=lambda x: -x[1])[:3]
    print(f"{label}: probe echo before the attack p50={pct(before,50):.2f} ms max={max(before):.1f} ms; "
          f"from the first /db teardown on: max={top[0][1]:.0f} ms, top3 {[(round(a,2), round(b)) for a, b in top]} (s after first teardown, ms); "
          f"longest gap between probe samples {max(g for _, g in gaps):.0f} ms; /db teardowns logged over {max(ends)-t_first:.2f} s")
    sd = [json.loads(l) for l in rw.grep('"status":504')]
    if sd: print(f"  504 lines {len(sd)}; duration_ms min {min(d['duration_ms'] for d in sd)} max {max(d['duration_ms'] for d in sd)} (connect_ms 3000)")
    print(f"  tunnels left {n}, fds {rw.fds()}, panics {panics(rw)[:1]}")
finally:
    rw.close(); H0.close(); H1.close(); E.close()
