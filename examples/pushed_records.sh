#!/usr/bin/env bash
# CPU that csmd spends on a trickle of pushed ITSM records over a large
# store (see BENCHMARKS.md, "Planners rest").
#
# Usage:
#   cargo build --release --bin csmd --example itsm_sync
#   ./target/release/examples/itsm_sync --keep        # prints "kept: DIR"
#   examples/pushed_records.sh target/release/csmd DIR [SECONDS]
#
# Runs csmd on a copy of DIR (the store of 100,000 incidents the sync left,
# with a bearer token added for pushes), waits for it to settle, reads its
# CPU time over 5 idle seconds, then pushes one new incident every 50 ms to
# POST /webhooks/itsm for SECONDS (default 15) and reads its CPU time again.
set -euo pipefail

csmd=$(realpath "$1")
kept=$2
seconds=${3:-15}
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

cp -r "$kept"/. "$work"
cd "$work"
echo push-token > push_token
printf '[connector.webhook]\nauth = "bearer"\ntoken = { file = "push_token" }\n' >> csmd.toml
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -i "s/^listen = .*/listen = \"127.0.0.1:$port\"/" csmd.toml

"$csmd" run --config csmd.toml > csmd-run.log 2>&1 &
pid=$!
for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$port/healthz" > /dev/null && break
    sleep 0.1
done
sleep 8 # the start-up runs of the planners and the integrity index

ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
idle_from=$(ticks); sleep 5; idle_to=$(ticks)

python3 - "$port" "$seconds" <<'PY'
import http.client, json, sys, time, uuid
port, seconds = int(sys.argv[1]), float(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port)
start, sent = time.time(), 0
while time.time() - start < seconds:
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    sent += 1
    record = {"sys_id": uuid.uuid4().hex, "sys_updated_on": now, "number": "INCP%07d" % sent,
              "priority": "3", "state": "2", "short_description": "pushed", "opened_at": now,
              "resolved_at": "", "closed_at": "", "cmdb_ci": "ci1", "business_service": "",
              "account": "acc1", "company": "", "major_incident_state": ""}
    conn.request("POST", "/webhooks/itsm", json.dumps({"table": "incident", "record": record}),
                 {"Authorization": "Bearer push-token", "Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    if response.status >= 300:
        sys.exit(f"push {sent} answered {response.status}")
    time.sleep(0.05)
print(f"pushed   {sent} incidents in {seconds:.0f} s")
PY
push_to=$(ticks)
echo "idle     $(( (idle_to - idle_from) * 1000 / hz )) ms of csmd CPU in 5 s"
echo "pushing  $(( (push_to - idle_to) * 1000 / hz )) ms of csmd CPU in $seconds s"
