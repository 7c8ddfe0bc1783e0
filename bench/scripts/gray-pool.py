# bench/scripts/gray-pool.py RINGWAY [--seconds N] [--tunnels N] [--flap-seconds N] [--no-race-key]:
# the closing figures of origin pools under gray failure, one worker, origins in this process.
#  1. A staller first in a failover pool of three: 10 SO_REUSEPORT sockets on one port, 3 with
#     listen(0) never accepted (their queues are filled first, so the kernel drops the SYNs that
#     hash to them: ~30 % of connects hang), 7 accepting and echoing; two healthy echo origins
#     A, B. --tunnels upgrades (concurrency 8, at most --seconds per mode), each echoing 16 B,
#     with mode "on" (defaults: connect racing with an automatic delay, ejection) and "off"
#     (race_after_ms = 0, max_ejected_percent = 0: ejection has no effect). Prints the
#     client-visible error rate, p50/p90/p99/max time to 101 and the tunnels each origin accepted.
#  2. Pool [A, B]: one upgrade every 5 ms (concurrency 4) for 1 s, then A's listening socket is
#     closed (refused) and 2 s more: client errors after the close, time from the close to
#     ringway's "origin ejected" line for A, upgrades between the two and their latency.
#  3. Pool [F, B], F listening 1 s / closed 1 s for --flap-seconds, one upgrade every 20 ms:
#     ringway's "origin ejected" / "origin back in rotation" lines for F per minute against F's
#     flips per minute.
# Ringway runs with RUST_LOG=info --log-format json; its logs stay in the printed directory.
# --no-race-key leaves race_after_ms out of mode "off" (for binaries that do not know it yet).
# About 100 s with the defaults (mode "off" waits out connect_ms = 2000 on every hung connect).
import argparse, asyncio, calendar, json, os, re, socket, struct, subprocess, sys
import tempfile, threading, time, traceback

ap = argparse.ArgumentParser(description="origin pools under gray failure")
ap.add_argument("ringway")
ap.add_argument("--seconds", type=float, default=45, help="longest load of each experiment-1 mode (default 45)")
ap.add_argument("--tunnels", type=int, default=400, help="upgrades per experiment-1 mode (default 400)")
ap.add_argument("--flap-seconds", type=float, default=60, help="experiment 3's length (default 60)")
ap.add_argument("--no-race-key", action="store_true", help="omit race_after_ms in mode off (old binaries)")
args = ap.parse_args()
RW = args.ringway
D = tempfile.mkdtemp(prefix="gray-pool.")
CONNECT_MS = 2000
HEAD_TIMEOUT, ECHO_TIMEOUT = 5.0, 3.0
REQ = (b"GET /db HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")

def log(*a): print("#", *a, file=sys.stderr, flush=True)
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def pct(v, p):  # nearest rank
    if not v: return float("nan")
    v = sorted(v); return v[min(len(v) - 1, max(0, -(-len(v) * p // 100) - 1))]
def kinds(res):  # what the clients that did not get 101 + a correct echo saw, counted
    k = {}
    for r in res:
        if not r["ok"]: k[r["status"]] = k.get(r["status"], 0) + 1
    return k
def listen_overflows():  # host-wide TcpExt ListenOverflows (SYNs dropped on a full accept queue)
    try:
        rows = [l.split() for l in open("/proc/net/netstat") if l.startswith("TcpExt:")]
        return int(rows[1][rows[0].index("ListenOverflows")])
    except Exception: return None

# ---- origins: one asyncio loop in a thread of its own -------------------------------------
class Origins:
    def __init__(self):
        self.loop = asyncio.new_event_loop(); self.servers = {}; self.ports = {}; self.accepts = {}
        self.stalled = []; self.writers = set()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True); self.thread.start()
    def call(self, coro, timeout=5.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)
    async def acall(self, coro, timeout=5.0):
        return await asyncio.wait_for(asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop)), timeout)
    def handler(self, name):
        async def echo(r, w):
            self.accepts[name].append(time.time()); self.writers.add(w)
            try:
                for _ in range(100000):
                    data = await asyncio.wait_for(r.read(65536), 30)
                    if not data: break
                    w.write(data); await w.drain()
            except (Exception, asyncio.CancelledError): pass
            finally: self.writers.discard(w); w.close()
        return echo
    async def _listen(self, name, socks):
        self.servers[name] = [await asyncio.start_server(self.handler(name), sock=s, backlog=128) for s in socks]
    def echo(self, name, port=None):
        self.accepts.setdefault(name, [])
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port or 0)); s.listen(128); self.ports[name] = s.getsockname()[1]
        self.call(self._listen(name, [s])); return self.ports[name]
    def staller(self, name, n=10, stalled=3):
        self.accepts.setdefault(name, []); socks = []
        for i in range(n):
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", socks[0].getsockname()[1] if socks else 0)); socks.append(s)
            s.listen(0 if i < stalled else 128)
        self.stalled = socks[:stalled]; self.ports[name] = socks[0].getsockname()[1]
        self.call(self._listen(name, socks[stalled:])); return self.ports[name]
    def stalled_full(self):  # TCP_INFO of a listener: tcpi_unacked = accept queue length
        return sum(struct.unpack_from("I", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104), 24)[0] >= 1
                   for s in self.stalled)
    async def _close(self, name):
        for srv in self.servers.pop(name, []): srv.close()
        return time.time()
    async def _reopen(self, name):
        for i in range(50):
            try:
                s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", self.ports[name])); s.listen(128); break
            except OSError:
                s.close(); await asyncio.sleep(0.01)
        else: raise RuntimeError(f"could not listen on {name}'s port again")
        await self._listen(name, [s]); return time.time()
    async def _shutdown(self):
        for name in list(self.servers): await self._close(name)
        for w in list(self.writers): w.close()
        me = asyncio.current_task(); rest = [t for t in asyncio.all_tasks() if t is not me]
        for t in rest: t.cancel()
        await asyncio.wait(rest, timeout=2) if rest else None
    def shutdown(self):
        try: self.call(self._shutdown(), 5)
        except Exception as e: log("origin shutdown:", e)
        for s in self.stalled: s.close()
        self.loop.call_soon_threadsafe(self.loop.stop); self.thread.join(3)

def prefill_stalled(origins, port, held):
    """Fill the accept queue of each never-accepted socket (one connection each) so that
    later SYNs hashing to them are dropped. Bounded: 20 rounds of 20 connects."""
    for _ in range(20):
        if origins.stalled_full() == len(origins.stalled): break
        pend = []
        for _ in range(20):
            c = socket.socket(); c.setblocking(False); c.connect_ex(("127.0.0.1", port)); pend.append(c)
        time.sleep(0.1)
        for c in pend:  # keep the ones that connected (some sit in a stalled queue), drop the hung
            if _connected(c): held.append(c)
            else: c.close()
    return origins.stalled_full()
def _connected(c):
    try: c.getpeername(); return True
    except OSError: return False

# ---- ringway: config, process, log tail ----------------------------------------------------
PROCS, failed = [], []
def config(name, P, origins, extra=""):
    lst = ", ".join(f'{{ addr = "127.0.0.1:{p}" }}' for p in origins)
    return (f'workers = 1\n[control]\nsocket = "{D}/c-{name}.sock"\nstate = ""\n'
            f'[timeouts]\nconnect_ms = {CONNECT_MS}\n[[listener]]\naddr = "127.0.0.1:{P}"\n'
            f'[[route]]\npath = "/db"\norigins = [{lst}]\npolicy = "failover"\n') + extra

TS = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z")
def parse(line):
    """A log line as a dict: json lines as they are, text lines with message and key=value fields."""
    line = line.strip()
    if line.startswith("{"):
        try: d = json.loads(line)
        except ValueError: return None
    else:
        d = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line)); d["message"] = line
        d = {k: v.strip('"') for k, v in d.items()}
        m = TS.match(line); d["timestamp"] = m.group(0) if m else ""
    m = TS.match(d.get("timestamp", ""))
    d["ts"] = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) + float(m.group(2) or 0) if m else None
    return d

class Ringway:
    """One ringway run: the config checked with `ringway check`, stderr in a file tailed every
    1 ms by a thread (each line kept with the time it was seen)."""
    def __init__(self, name, cfg):
        self.name, self.lines, self.stop = name, [], threading.Event()
        path = f"{D}/{name}.toml"; open(path, "w").write(cfg)
        chk = subprocess.run([RW, "check", "--config", path], capture_output=True, text=True, timeout=20)
        if chk.returncode != 0:
            raise RuntimeError(f"ringway check refused {path}: {(chk.stdout + chk.stderr).strip()}"
                               + ("\n  (an older binary? try --no-race-key)" if "race_after_ms" in chk.stdout + chk.stderr else ""))
        self.P = int(re.search(r'addr = "127.0.0.1:(\d+)"', cfg).group(1)); self.logpath = f"{D}/{name}.log"
        self.err = open(self.logpath, "w")
        self.proc = subprocess.Popen([RW, "--log-format", "json", "run", "--config", path], stdout=subprocess.DEVNULL,
                                     stderr=self.err, env={**os.environ, "RUST_LOG": "info"})
        PROCS.append(self)
        self.tail = threading.Thread(target=self._tail, daemon=True); self.tail.start()
        for _ in range(250):  # up to 5 s to listen
            if self.proc.poll() is not None: raise RuntimeError(f"ringway exited: {open(self.logpath).read()[-2000:]}")
            try: socket.create_connection(("127.0.0.1", self.P), 0.2).close(); return
            except OSError: time.sleep(0.02)
        raise RuntimeError("ringway did not listen within 5 s")
    def _tail(self):
        with open(self.logpath) as f:
            part = ""
            while True:
                chunk = f.readline()
                if chunk:
                    part += chunk
                    if part.endswith("\n"):
                        d = parse(part); part = ""
                        if d: d["seen"] = time.time(); self.lines.append(d)
                    continue
                if self.stop.is_set(): break
                time.sleep(0.001)
    def find(self, message, origin):
        return [d for d in list(self.lines) if str(d.get("message", "")).startswith(message) and d.get("origin") == origin]
    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try: self.proc.wait(5)
            except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait(5)
        time.sleep(0.01); self.stop.set(); self.tail.join(2); self.err.close()
        if self in PROCS: PROCS.remove(self)

# ---- clients ------------------------------------------------------------------------------
async def tunnel(P):
    """One upgrade to /db and a 16 B echo: start (wall), ms to the response head, status, ok."""
    res = {"start": time.time(), "ms": None, "status": "connect-error", "ok": False}
    w = None
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", P), HEAD_TIMEOUT)
        t0 = time.perf_counter(); w.write(REQ); await w.drain()
        try: head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.TimeoutError: res["status"] = "timeout"; return res
        except (asyncio.IncompleteReadError, ConnectionError): res["status"] = "eof"; return res
        res["ms"] = (time.perf_counter() - t0) * 1e3; res["status"] = head.split()[1].decode()
        if res["status"] != "101": return res
        payload, mask = os.urandom(16), os.urandom(4)
        w.write(bytes([0x82, 0x80 | 16]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))); await w.drain()
        async def echoed():
            got = b""
            while len(got) < 16:  # normally one frame: 0x82, 16, payload
                h = await r.readexactly(2)
                if h[0] & 0x0F == 8: return "101+close-frame"  # ringway closed the tunnel
                if h[0] & 0x0F not in (0, 2) or h[1] > 125: return f"101+frame-{h[0]:#x}"
                got += await r.readexactly(h[1])
            return "101" if got == payload else "101+wrong-echo"
        try: res["status"] = await asyncio.wait_for(echoed(), ECHO_TIMEOUT); res["ok"] = res["status"] == "101"
        except asyncio.TimeoutError: res["status"] = "101+echo-timeout"
        except (asyncio.IncompleteReadError, ConnectionError): res["status"] = "101+echo-eof"
        return res
    except (OSError, asyncio.TimeoutError) as e:
        res["status"] = "connect-error"; return res
    finally:
        res["end"] = time.time()
        if w is not None: w.close()

async def drive_count(P, n, conc, seconds):
    out, left, end = [], [n], time.perf_counter() + seconds
    async def worker():
        while left[0] > 0 and time.perf_counter() < end:
            left[0] -= 1; out.append(await tunnel(P))
    await asyncio.gather(*[worker() for _ in range(conc)])
    return out

async def drive_rate(P, every, conc, seconds, out):
    """One upgrade every `every` s while fewer than `conc` are in flight (else the tick is skipped)."""
    inflight, start, i, skipped = set(), time.perf_counter(), 0, 0
    async def one(): out.append(await tunnel(P))
    while i * every < seconds:
        await asyncio.sleep(max(0.0, start + i * every - time.perf_counter())); i += 1
        if len(inflight) >= conc: skipped += 1; continue
        t = asyncio.create_task(one()); inflight.add(t); t.add_done_callback(inflight.discard)
    if inflight: await asyncio.wait(inflight, timeout=HEAD_TIMEOUT + ECHO_TIMEOUT + 6)
    return skipped

# ---- experiments ----------------------------------------------------------------------------
def exp1(origins, held):
    S = origins.staller("S"); A = origins.echo("A1"); B = origins.echo("B1")
    full = prefill_stalled(origins, S, held)
    log(f"staller 127.0.0.1:{S}: {full}/{len(origins.stalled)} never-accepted queues full; A {A}, B {B}")
    rows = []
    off_keys = "max_ejected_percent = 0\n"
    off_race = "race_after_ms = 0\n"  # connect racing off (a binary that knows the key; see --no-race-key)
    for mode in ("on", "off"):
        extra = "" if mode == "on" else off_keys + ("" if args.no_race_key else off_race)
        try: rw = Ringway(f"staller-{mode}", config(f"staller-{mode}", free(), [S, A, B], extra))
        except Exception as e:  # e.g. an old binary refusing race_after_ms: keep the other mode's row
            failed.append((f"experiment 1 mode {mode}", str(e))); log(f"mode {mode}: {e}"); continue
        try:
            time.sleep(0.2)
            before = {k: len(origins.accepts[k]) for k in ("S", "A1", "B1")}; lo0 = listen_overflows(); full = origins.stalled_full()
            t0 = time.perf_counter()
            res = asyncio.run(drive_count(rw.P, args.tunnels, 8, args.seconds))
            secs = time.perf_counter() - t0; time.sleep(0.1)
            acc = {k: len(origins.accepts[k]) - before[k] for k in before}; lo1 = listen_overflows()
            ej = len(rw.find("origin ejected", f"127.0.0.1:{S}"))
        finally: rw.close()
        ms = [r["ms"] for r in res if r["status"].startswith("101")]
        errs = [r for r in res if not r["ok"]]
        rows.append(dict(mode=mode, n=len(res), err=len(errs), kinds=kinds(res), ms=ms, acc=acc, secs=secs, ej=ej, full=full,
                         err_ms=[r["ms"] for r in errs if r["ms"] is not None],
                         drops=None if lo0 is None or lo1 is None else lo1 - lo0, extra=extra.strip().replace("\n", ", ")))
        log(f"mode {mode}: {len(res)} tunnels in {secs:.1f} s, errors {kinds(res)}, accepted {acc}")
    return rows

def exp2(origins):
    A = origins.echo("A2"); B = origins.echo("B2")
    rw = Ringway("refuse", config("refuse", free(), [A, B]))
    res, t_close = [], [None]
    try:
        time.sleep(0.2)
        async def run():
            async def closer():
                await asyncio.sleep(1.0); t_close[0] = await origins.acall(origins._close("A2"))
            c = asyncio.create_task(closer())
            skipped = await drive_rate(rw.P, 0.005, 4, 3.0, res); await c; return skipped
        skipped = asyncio.run(run())
        for _ in range(1000):  # up to 1 s more for the line
            if rw.find("origin ejected", f"127.0.0.1:{A}"): break
            time.sleep(0.001)
        ejl = rw.find("origin ejected", f"127.0.0.1:{A}")
    finally: rw.close()
    tc = t_close[0]
    before = [r for r in res if r["start"] < tc]; after = [r for r in res if r["end"] >= tc]
    pre_ms = [r["ms"] for r in before if r["ok"]]
    out = dict(n=len(res), n_before=len(before), n_after=len(after), skipped=skipped,
               err_after=sum(not r["ok"] for r in after), kinds_after=kinds(after), err_before=sum(not r["ok"] for r in before if r["end"] < tc),
               a_after=sum(t >= tc for t in origins.accepts["A2"]), pre_p50=pct(pre_ms, 50), pre_p90=pct(pre_ms, 90),
               ej=None)
    if ejl:
        e = ejl[0]; te = e["ts"] if e["ts"] is not None else e["seen"]
        win = [r for r in res if tc <= r["start"] <= te]
        out.update(ej=(te - tc) * 1e3, seen=(e["seen"] - tc) * 1e3, why=e.get("evidence"), n_ej=len(ejl), win=len(win),
                   win_ms=[r["ms"] for r in win if r["ms"] is not None],
                   win_slow=sum(r["ms"] is not None and r["ms"] > out["pre_p90"] for r in win))
    return out

def exp3(origins):
    F = origins.echo("F3"); B = origins.echo("B3")
    rw = Ringway("flap", config("flap", free(), [F, B]))
    res, flips = [], [0]
    try:
        time.sleep(0.2)
        async def run():
            async def flapper():
                up, start = True, time.perf_counter()
                for k in range(1, int(args.flap_seconds) + 1):
                    await asyncio.sleep(max(0.0, start + k - time.perf_counter()))
                    if k >= args.flap_seconds: break
                    await origins.acall(origins._close("F3") if up else origins._reopen("F3"))
                    up = not up; flips[0] += 1
                if not up: await origins.acall(origins._reopen("F3"))
            f = asyncio.create_task(flapper())
            skipped = await drive_rate(rw.P, 0.020, 4, args.flap_seconds, res); await f; return skipped
        t0 = time.perf_counter(); skipped = asyncio.run(run()); secs = time.perf_counter() - t0
        time.sleep(0.05)
        ej = rw.find("origin ejected", f"127.0.0.1:{F}"); back = rw.find("origin back in rotation", f"127.0.0.1:{F}")
    finally: rw.close()
    return dict(secs=secs, flips=flips[0], ej=len(ej), back=len(back), n=len(res), skipped=skipped,
                err=sum(not r["ok"] for r in res), kinds=kinds(res), f_acc=len(origins.accepts["F3"]),
                ejected_for=[e.get("ejected_for_ms") for e in ej])

# ---- report -------------------------------------------------------------------------------
def report(r1, r2, r3, failed):
    f = lambda x: "-" if x is None or x != x else (f"{x:.0f}" if x >= 100 else f"{x:.1f}")
    print(f"\ngray-pool: {RW}, workers = 1, connect_ms = {CONNECT_MS}; logs and configs in {D}")
    if r1:
        print(f"\n1. staller (3 of 10 queues full, ~30 % of connects hang) first in a failover pool [S, A, B]; "
              f"{args.tunnels} upgrades per mode, concurrency 8")
        print(f"   {'mode':<5}{'tunnels':>8}{'errors':>8}{'err %':>7}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}"
              f"{'p99 all':>9}{'on S':>7}{'on A':>6}{'on B':>6}{'S ejected':>10}{'SYNs dropped':>13}{'secs':>6}")
        for r in r1:
            ms = r["ms"]
            print(f"   {r['mode']:<5}{r['n']:>8}{r['err']:>8}{100 * r['err'] / max(1, r['n']):>7.1f}"
                  f"{f(pct(ms, 50)):>8}{f(pct(ms, 90)):>8}{f(pct(ms, 99)):>8}{f(max(ms) if ms else None):>8}"
                  f"{f(pct(ms + r['err_ms'], 99)):>9}"
                  f"{r['acc']['S']:>7}{r['acc']['A1']:>6}{r['acc']['B1']:>6}{r['ej']:>10}{'-' if r['drops'] is None else r['drops']:>13}{r['secs']:>6.1f}")
        for r in r1:
            print(f"   {r['mode']}: {r['extra'] or 'defaults'}; S's stalled queues full {r['full']}/3"
                  + (f"; errors {r['kinds']}" if r["kinds"] else "")
                  + (f", answered after p50 {f(pct(r['err_ms'], 50))} ms, max {f(max(r['err_ms']))} ms" if r["err_ms"] else ""))
        print("   time to 101 from the request sent, over upgrades answered 101 (p99 all: time to any answer, errors"
              "\n   included); on S/A/B: tunnels each origin accepted;"
              "\n   S ejected: ringway's 'origin ejected' lines for S; SYNs dropped: host-wide TcpExt ListenOverflows delta"
              "\n   (SYNs that hit a full stalled queue, retransmissions included)")
    if r2:
        r = r2
        print(f"\n2. pool [A, B], failover: one upgrade every 5 ms (concurrency 4), A's listener closed after 1 s, 2 s more")
        print(f"   upgrades {r['n']} ({r['n_before']} started before the close, {r['skipped']} ticks skipped at the concurrency cap); "
              f"client-visible errors after the close: {r['err_after']} of {r['n_after']}"
              + (f" {r['kinds_after']}" if r["kinds_after"] else "") + f" (before: {r['err_before']})")
        if r["err_after"]:
            print("   (a 101+close-frame here is usually a connect A's kernel completed but A had not accepted when its"
                  "\n    listener closed: reset after the 101; see 'origin connection failed' in the log)")
        if r["ej"] is None:
            print("   A was never reported ejected")
        else:
            print(f"   A ejected {r['ej']:.1f} ms after its close (ringway's log timestamp; the line was read {r['seen']:.1f} ms after); "
                  f"evidence: {r['why']!r}; 'origin ejected' lines for A: {r['n_ej']}")
            print(f"   upgrades started between close and ejection: {r['win']}, time to 101 "
                  f"{' '.join(f'{x:.2f}' for x in r['win_ms']) or '-'} ms; {r['win_slow']} above the pre-close p90 "
                  f"({r['pre_p90']:.2f} ms; p50 {r['pre_p50']:.2f} ms)")
        print(f"   connections A accepted after its close: {r['a_after']}")
    if r3:
        r = r3; per = 60.0 / r["secs"]
        print(f"\n3. pool [F, B], failover: F listening 1 s / closed 1 s for {r['secs']:.0f} s, one upgrade every 20 ms")
        print(f"   {'':<26}{'count':>7}{'per minute':>12}")
        print(f"   {'F flips (up/down)':<26}{r['flips']:>7}{r['flips'] * per:>12.1f}")
        print(f"   {'ringway: origin ejected':<26}{r['ej']:>7}{r['ej'] * per:>12.1f}")
        print(f"   {'ringway: back in rotation':<26}{r['back']:>7}{r['back'] * per:>12.1f}")
        print(f"   {'ringway: state changes':<26}{r['ej'] + r['back']:>7}{(r['ej'] + r['back']) * per:>12.1f}")
        print(f"   ejected_for_ms in turn: {' '.join(str(x) for x in r['ejected_for']) or '-'}")
        print(f"   upgrades {r['n']} ({r['skipped']} ticks skipped), client-visible errors {r['err']}"
              + (f" {r['kinds']}" if r["kinds"] else "") + f"; tunnels F accepted {r['f_acc']}")
    for name, e in failed: print(f"\n{name} FAILED: {e}")

origins, held = None, []
r1 = r2 = r3 = None
try:
    origins = Origins()
    for name, fn in (("experiment 1", lambda: exp1(origins, held)), ("experiment 2", lambda: exp2(origins)),
                     ("experiment 3", lambda: exp3(origins))):
        log(f"{name} ...")
        try: res = fn()
        except Exception as e:
            traceback.print_exc(); failed.append((name, str(e))); continue
        if name.endswith("1"): r1 = res
        elif name.endswith("2"): r2 = res
        else: r3 = res
    report(r1, r2, r3, failed); sys.stdout.flush()
finally:
    for rw in list(PROCS): rw.close()
    for c in held: c.close()
    if origins: origins.shutdown()
sys.exit(1 if failed else 0)
