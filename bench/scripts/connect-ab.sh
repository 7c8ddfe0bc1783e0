#!/bin/bash
# bench/scripts/connect-ab.sh OLD_RINGWAY NEW_RINGWAY [ROUNDS]: connect + upgrade + 64 B echo +
# close rate of two ringway builds, alternated in one run (one worker each, the client closing
# and the origin closing), ringbench connect -k 8 -d 4; prints setups/s and the server's CPU %.
set -euo pipefail
OLD=$1; NEW=$2; ROUNDS=${3:-3}
RB=${RB:-target/release/ringbench}
D=$(mktemp -d /tmp/connect-ab.XXXX)
free() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
OE=$(free); OC=$(free)
"$RB" origin --listen 127.0.0.1:$OE --mode echo >/dev/null 2>&1 & P1=$!
"$RB" origin --listen 127.0.0.1:$OC --mode echo-close >/dev/null 2>&1 & P2=$!
trap 'kill $P1 $P2 2>/dev/null; rm -rf "$D"' EXIT
sleep 0.3
rate() { python3 -c 'import json,sys;d=json.load(sys.stdin);print(round(d["setups_per_sec"]), round(d["server_cpu_percent"] or 0))'; }
for round in $(seq "$ROUNDS"); do
  for bin in "$OLD" "$NEW"; do
    P=$(free)
    printf 'workers = 1\n[control]\nsocket = "%s/c.sock"\nstate = ""\n[[listener]]\naddr = "127.0.0.1:%s"\n[[route]]\npath = "/e"\norigin = "127.0.0.1:%s"\n[[route]]\npath = "/c"\norigin = "127.0.0.1:%s"\n' "$D" "$P" "$OE" "$OC" > "$D/c.toml"
    RUST_LOG=warn "$bin" run --config "$D/c.toml" >/dev/null 2>&1 & RP=$!
    sleep 0.4
    a=$("$RB" connect --target ws://127.0.0.1:$P/e -k 8 -d 4 --json - --server-pid $RP 2>/dev/null | rate)
    b=$("$RB" connect --target ws://127.0.0.1:$P/c -k 8 -d 4 --close origin --json - --server-pid $RP 2>/dev/null | rate)
    echo "round $round $bin: client close $a | origin close $b   (setups/s, server CPU %)"
    kill $RP; wait $RP 2>/dev/null || true
  done
done
