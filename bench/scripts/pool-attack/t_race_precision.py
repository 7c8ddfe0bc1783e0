# Race deadlines via Op::Wake: pool [black hole, echo], race_after_ms = R: setup latency should be ~R, not the 100 ms tick.
import os, sys, time, asyncio, json
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import *
from wsc import *
R = int(sys.argv[1]); N = int(sys.argv[2]) if len(sys.argv) > 2 else 200
H = Hang("h"); A = Echo("a")
P = free()
cfg = (f'workers = 2\n[control]\nsocket = "{W}/run/rp.sock"\nstate = ""\n[[listener]]\naddr = "127.0.0.1:{P}"\n'
       f'[[route]]\npath = "/db"\norigins = [{{ addr = "127.0.0.1:{H.port}" }}, {{ addr = "127.0.0.1:{A.port}" }}]\n'
       f'race_after_ms = {R}\nmax_ejected_percent = 0\n')
rw = Ringway("rp", cfg)
try:
    async def go():
        out = []
        for _ in range(N):
            out.append(await tunnel(rw.P, "/db")); await asyncio.sleep(0.013)
        return out
    res = asyncio.run(go())
    ts = [r[2] * 1000 for r in res if r[0] == "ok"]
    print(f"race_after_ms={R}: {summary(res)} setup ms p0={min(ts):.1f} p50={pct(ts,50):.1f} p90={pct(ts,90):.1f} p99={pct(ts,99):.1f} max={max(ts):.1f} late(>R+15ms)={sum(t > R + 15 for t in ts)}/{len(ts)}")
finally:
    rw.close(); H.close(); A.close()
