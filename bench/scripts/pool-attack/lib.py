# Shared helpers for the racing attacks. Loopback only.
import asyncio, json, os, re, resource, signal, socket, struct, subprocess, sys, threading, time

_HERE = os.path.dirname(os.path.abspath(__file__)); _REL = os.path.join(_HERE, "..", "..", "..", "target", "release")
RW = os.environ.get("RW", os.path.join(_REL, "ringway")); CTL = os.environ.get("CTL", os.path.join(_REL, "ringctl")); RB = os.environ.get("RB", os.path.join(_REL, "ringbench"))
W = os.environ.get("WORK", "/tmp/pool-attack"); os.makedirs(os.path.join(W, "run"), exist_ok=True)
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))

REQ = (b"GET /db HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")

def log(*a): print("#", *a, file=sys.stderr, flush=True)

def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def frame(payload, mask=b"\x01\x02\x03\x04"):
    assert len(payload) <= 125
    return bytes([0x82, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

# ---- origins ---------------------------------------------------------------------------
def serve_echo(owner, sel):
    """Until owner.stop: accepts on the listeners registered with data "L" (counting
    owner.accepts) and echoes on every accepted connection."""
    import selectors
    while not owner.stop:
        for k, _ in sel.select(0.2):
            if k.data == "L":
                try: c, _ = k.fileobj.accept()
                except OSError: continue
                c.setblocking(False); owner.accepts += 1; sel.register(c, selectors.EVENT_READ, "C")
            else:
                c = k.fileobj
                try: d = c.recv(65536)
                except OSError: d = b""
                if d:
                    try: c.send(d)
                    except OSError: pass
                else: sel.unregister(c); c.close()

class Echo:
    """Threaded accept loop, counts accepts, echoes on a thread per connection (cheap enough)."""
    def __init__(self, name, port=None, backlog=4096):
        self.name = name; self.accepts = 0; self.conns = []; self.stop = False
        self.s = socket.socket(); self.s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.s.bind(("127.0.0.1", port or 0)); self.s.listen(backlog); self.port = self.s.getsockname()[1]
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._run, daemon=True); self.t.start()
    def _run(self):
        import selectors
        self.sel = selectors.DefaultSelector(); self.sel.register(self.s, selectors.EVENT_READ, "L")
        serve_echo(self, self.sel)
    def close(self):
        self.stop = True; self.t.join(2)
        for k in list(self.sel.get_map().values()):
            try: k.fileobj.close()
            except Exception: pass

class Hang:
    """A listener whose every connect hangs: listen(0), never accepted, queue pre-filled so
    later SYNs are dropped."""
    def __init__(self, name):
        self.name = name
        self.s = socket.socket(); self.s.bind(("127.0.0.1", 0)); self.s.listen(0)
        self.port = self.s.getsockname()[1]; self.held = []
        for _ in range(3):
            c = socket.socket(); c.setblocking(False); c.connect_ex(("127.0.0.1", self.port)); self.held.append(c)
        time.sleep(0.1)
        n = struct.unpack_from("I", self.s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104), 24)[0]
        assert n >= 1, "hang listener queue not filled"
    @property
    def accepts(self): return 0
    def close(self):
        for c in self.held: c.close()
        self.s.close()

# ---- ringway -------------------------------------------------------------------------------
def config(name, P, origins, route_extra="", top_extra="", workers=1, connect_ms=2000):
    lst = ", ".join(f'{{ addr = "127.0.0.1:{p}" }}' if isinstance(p, int) else p for p in origins)
    return (f'workers = {workers}\n{top_extra}[control]\nsocket = "{W}/run/{name}.sock"\nstate = ""\n'
            f'[timeouts]\nconnect_ms = {connect_ms}\n[[listener]]\naddr = "127.0.0.1:{P}"\n'
            f'[[route]]\npath = "/db"\norigins = [{lst}]\npolicy = "failover"\n{route_extra}')

class Ringway:
    def __init__(self, name, cfg, rust_log="info"):
        os.makedirs(f"{W}/run", exist_ok=True)
        self.name = name; self.path = f"{W}/run/{name}.toml"; open(self.path, "w").write(cfg)
        self.sock = f"{W}/run/{name}.sock"
        chk = subprocess.run([RW, "check", "--config", self.path], capture_output=True, text=True, timeout=20)
        if chk.returncode != 0: raise RuntimeError(chk.stdout + chk.stderr)
        self.P = int(re.search(r'addr = "127.0.0.1:(\d+)"', cfg).group(1))
        self.logpath = f"{W}/run/{name}.log"; self.err = open(self.logpath, "w")
        self.proc = subprocess.Popen([RW, "--log-format", "json", "run", "--config", self.path],
                                     stdout=subprocess.DEVNULL, stderr=self.err, env={**os.environ, "RUST_LOG": rust_log})
        self.pid = self.proc.pid
        for _ in range(250):
            if self.proc.poll() is not None: raise RuntimeError("ringway exited: " + open(self.logpath).read()[-2000:])
            try: socket.create_connection(("127.0.0.1", self.P), 0.2).close(); break
            except OSError: time.sleep(0.02)
        time.sleep(0.2)
    def fds(self):
        try: return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError: return None
    def fd_kinds(self):
        k = {}
        try:
            for f in os.listdir(f"/proc/{self.pid}/fd"):
                try: t = os.readlink(f"/proc/{self.pid}/fd/{f}")
                except OSError: continue
                t = re.sub(r"\[\d+\]", "", t); k[t] = k.get(t, 0) + 1
        except OSError: pass
        return k
    def rss_kb(self):
        try:
            for l in open(f"/proc/{self.pid}/status"):
                if l.startswith("VmRSS"): return int(l.split()[1])
        except OSError: return None
    def ctl(self, *args, js=True):
        a = [CTL, "--socket", self.sock] + (["--json"] if js else []) + list(args)
        r = subprocess.run(a, capture_output=True, text=True, timeout=20)
        if js:
            try: return json.loads(r.stdout)
            except ValueError: return {"raw": r.stdout, "err": r.stderr, "rc": r.returncode}
        return r.stdout + r.stderr
    def tunnels(self):
        t = self.ctl("tunnels")
        return t.get("tunnels", t) if isinstance(t, dict) else t
    def log_lines(self):
        out = []
        for l in open(self.logpath, errors="replace"):
            l = l.strip()
            if not l: continue
            try: out.append(json.loads(l))
            except ValueError: out.append({"message": l, "raw": True})
        return out
    def grep(self, pat):
        return [l for l in open(self.logpath, errors="replace") if re.search(pat, l)]
    def alive(self): return self.proc.poll() is None
    def close(self, sig=signal.SIGTERM, wait=10):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try: self.proc.wait(wait)
            except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait(5)
        self.err.close(); return self.proc.returncode

def snapshot(rw, label):
    d = dict(label=label, fds=rw.fds(), rss_kb=rw.rss_kb(), alive=rw.alive())
    log(f"{label}: fds={d['fds']} rss={d['rss_kb']}kB alive={d['alive']} kinds={rw.fd_kinds()}")
    return d

# ---- clients ---------------------------------------------------------------------------------
async def upgrade(P, timeout=10.0, hold=None, close_after=None, echo=True):
    """One upgrade. close_after: seconds after sending the request at which the client closes
    (abort) without waiting. hold: an asyncio.Event to wait on before closing a 101 tunnel."""
    t0 = time.perf_counter(); w = None
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", P), timeout)
        w.write(REQ); await w.drain()
        if close_after is not None:
            await asyncio.sleep(close_after)
            tr = w.transport
            if tr.get_extra_info("socket") is not None and close_after < 0:
                pass
            w.close(); w = None
            return ("closed", time.perf_counter() - t0)
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), timeout)
        st = head.split()[1].decode(); th = time.perf_counter() - t0
        if st == "101" and echo:
            w.write(frame(b"0123456789abcdef")); await w.drain()
            got = await asyncio.wait_for(r.readexactly(18), timeout)
            if got[2:] != b"0123456789abcdef": st = "101-bad-echo"
        if st.startswith("101") and hold is not None:
            await hold.wait()
        return (st, th)
    except asyncio.TimeoutError: return ("timeout", time.perf_counter() - t0)
    except (asyncio.IncompleteReadError, ConnectionError) as e: return ("eof", time.perf_counter() - t0)
    except OSError as e: return (f"oserr-{e.errno}", time.perf_counter() - t0)
    finally:
        if w is not None: w.close()

def count(res):
    k = {}
    for st, _ in res: k[st] = k.get(st, 0) + 1
    return k

def pct(v, p):
    if not v: return float("nan")
    v = sorted(v); return v[min(len(v) - 1, max(0, -(-len(v) * p // 100) - 1))]

def wait_settle(rw, want_tunnels=0, secs=15):
    t0 = time.time()
    while time.time() - t0 < secs:
        t = rw.tunnels()
        n = len(t) if isinstance(t, list) else None
        if n == want_tunnels: return n, time.time() - t0
        time.sleep(0.25)
    return n, time.time() - t0

def panics(rw):
    return rw.grep(r"panicked|SIGSEGV|stack overflow|double free")

class Staller:
    """gray-pool.py's staller: n SO_REUSEPORT listeners on one port, `stalled` of them listen(0)
    and never accepted with their one-place queue pre-filled (SYNs hashing to them are dropped),
    the others accept and echo (via Echo-like selector thread). stalled == n: every connect hangs."""
    def __init__(self, name, n=10, stalled=3):
        import selectors
        self.name = name; self.accepts = 0; self.stop = False; socks = []
        for i in range(n):
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", socks[0].getsockname()[1] if socks else 0)); socks.append(s)
            s.listen(0 if i < stalled else 4096)
        self.port = socks[0].getsockname()[1]; self.stalled = socks[:stalled]; self.live = socks[stalled:]
        self.held = []
        for _ in range(40):
            if self.full() == len(self.stalled): break
            pend = []
            for _ in range(20):
                c = socket.socket(); c.setblocking(False); c.connect_ex(("127.0.0.1", self.port)); pend.append(c)
            time.sleep(0.1)
            for c in pend:
                try: c.getpeername(); self.held.append(c)
                except OSError: c.close()
        # drain what the live listeners got from the prefill
        for s in self.live:
            s.setblocking(False)
            while True:
                try: s.accept()[0].close()
                except OSError: break
        self.sel = selectors.DefaultSelector()
        for s in self.live: self.sel.register(s, selectors.EVENT_READ, "L")
        self.t = threading.Thread(target=self._run, daemon=True); self.t.start()
    def full(self):
        return sum(struct.unpack_from("I", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104), 24)[0] >= 1 for s in self.stalled)
    def _run(self):
        serve_echo(self, self.sel)
    def close(self):
        self.stop = True; self.t.join(2)
        for k in list(self.sel.get_map().values()):
            try: k.fileobj.close()
            except Exception: pass
        for s in self.stalled: s.close()
        for c in self.held: c.close()
