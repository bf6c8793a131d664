#!/usr/bin/env bash
# Two Nimbus binaries (BEFORE_BIN and AFTER_BIN, e.g. release builds of a merge base
# and of a branch) beside PocketBase POCKETBASE_VERSION, in one run, in turns, so
# that a shared machine's noise falls on all three alike. Each round, in turn:
#   overhead   a hello-world execution over its HTTP route beside `{ __typename }`,
#              one request at a time, alternated (benches/functions/bench.py): the
#              difference of the medians is what an execution costs
#   hello      wrk (1 thread, CONNECTIONS connections, DURATION) on the hello-world
#              route of each Nimbus and on PocketBase's `routerAdd` hook, with the
#              server's CPU time per request (utime + stime from /proc over the run)
# The order of the two Nimbus binaries alternates between rounds. Goals (issue 24):
# overhead p50 < 0.5 ms; hello ≥ 2× PocketBase.
#
# Usage: BEFORE_BIN=path AFTER_BIN=path benches/functions-compare.sh
# Knobs (environment): ROUNDS=3 CONNECTIONS=32 DURATION=10s OVERHEAD_ROUNDS=1000
#   QUIET_WAIT=60 POCKETBASE_VERSION=0.40.6 BENCH_CACHE=benches/.cache
# Needs wrk, curl, jq and python3 (with venv and pip, for PocketBase).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
here=$root/benches
# shellcheck source=benches/lib.sh
source "$root/benches/lib.sh"

ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-10s}
OVERHEAD_ROUNDS=${OVERHEAD_ROUNDS:-1000}
QUIET_WAIT=${QUIET_WAIT:-60}
POCKETBASE_VERSION=${POCKETBASE_VERSION:-0.40.6}
BENCH_CACHE=${BENCH_CACHE:-$root/benches/.cache}
[[ -x ${BEFORE_BIN:-} && -x ${AFTER_BIN:-} ]] || die "set BEFORE_BIN and AFTER_BIN to two nimbus binaries"
for tool in wrk curl jq python3; do command -v "$tool" >/dev/null || die "$tool is needed"; done

open_workspace functions-compare

section "Machine"
describe_machine
say "cpu:      $machine"
say "memory:   $memory"
say "kernel:   $(uname -sr)"
say "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
say "before:   $BEFORE_BIN"
say "after:    $AFTER_BIN"
install_pocketbase

declare -A url=() pid=()
# `start_nimbus NAME BIN`: a release `nimbus serve` on SQLite with the functions set up.
start_nimbus() {
    local name=$1 bin=$2 port
    free_port && port=$REPLY
    cp "$bin" "$work/nimbus-$name"
    env -u NIMBUS_DATABASE_URL -u NIMBUS_REDIS_URL -u NIMBUS_SECRET -u NIMBUS_DATA_DIR -u NIMBUS_LISTEN \
        NIMBUS_LOG=warn "$work/nimbus-$name" serve --listen "127.0.0.1:$port" --data-dir "$work/data-$name" \
        >"$work/$name.out" 2>"$work/$name.err" &
    pid[$name]=$!
    started_pids+=("${pid[$name]}")
    wait_for_port "$port" "${pid[$name]}" "$work/$name.err"
    admin_key_from "$work/$name.out"
    url[$name]="http://127.0.0.1:$port"
    python3 "$here/functions/bench.py" setup "${url[$name]}" "$admin_key" | tail -n 1
}

section "Servers"
start_nimbus before "$BEFORE_BIN"
start_nimbus after "$AFTER_BIN"
free_port && pb_port=$REPLY
mkdir -p "$work/pocketbase/pb_hooks"
cat >"$work/pocketbase/pb_hooks/bench.pb.js" <<'JS'
routerAdd("GET", "/hello", (e) => e.json(200, { message: "Hello" }));
JS
(cd "$work/pocketbase" && exec "$pocketbase" serve --http "127.0.0.1:$pb_port" \
    --dir "$work/pocketbase/pb_data") >"$work/pocketbase.out" 2>&1 &
pid[pocketbase]=$!
started_pids+=("${pid[pocketbase]}")
wait_for_port "$pb_port" "${pid[pocketbase]}" "$work/pocketbase.out"
url[pocketbase]="http://127.0.0.1:$pb_port"

ticks_of() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

cat >"$work/check.lua" <<'LUA'
bad = 0
response = function(status, headers, body)
    if status ~= 200 or not string.find(body, '"message":"Hello"', 1, true) then bad = bad + 1 end
end
done = function(summary, latency, requests)
    io.write(string.format("BAD %d\n", bad))
end
LUA

# `hello NAME ROUND`: wrk on NAME's hello world; prints a ROUND line.
hello() {
    local name=$1 round=$2 path=/v1/functions/hello busy=ok before after
    [[ $name == pocketbase ]] && path=/hello
    wait_for_quiet || busy="${REPLY}%"
    before=$(ticks_of "${pid[$name]}")
    wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/check.lua" "${url[$name]}$path" >"$work/wrk.out"
    after=$(ticks_of "${pid[$name]}")
    local rps requests bad
    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$work/wrk.out")
    requests=$(awk '/requests in/ { print $1 }' "$work/wrk.out")
    bad=$(awk '/^BAD / { print $2 }' "$work/wrk.out")
    grep -q 'Non-2xx\|Socket errors' "$work/wrk.out" && bad="$bad+errors"
    local cpu_us
    cpu_us=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$requests" 'BEGIN { printf "%.0f", t / hz / n * 1e6 }')
    say "ROUND round=$round what=hello server=$name rps=$rps cpu_us_per_request=$cpu_us bad=$bad machine=$busy load=$(cut -d' ' -f1 /proc/loadavg)"
}

# `overhead NAME ROUND`: prints a ROUND line.
overhead() {
    local name=$1 round=$2 busy=ok line
    wait_for_quiet || busy="${REPLY}%"
    line=$(python3 "$here/functions/bench.py" overhead "${url[$name]}" "$OVERHEAD_ROUNDS" | tail -n 1)
    say "ROUND round=$round what=overhead server=$name ${line#RESULT } machine=$busy load=$(cut -d' ' -f1 /proc/loadavg)"
}

section "Rounds"
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order=(before after); else order=(after before); fi
    for name in "${order[@]}"; do overhead "$name" "$round"; done
    for name in "${order[@]}" pocketbase; do hello "$name" "$round"; done
done | tee "$work/rounds"

section "Medians over the rounds"
for name in before after; do
    awk -v n="$name" '$0 ~ "what=overhead server=" n " " {
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        print v["overhead_p50_ms"], v["hello_p50_ms"] }' "$work/rounds" | sort -n |
        awk -v n="$name" '{ a[NR] = $1; h[NR] = $2 } END { printf "%s: overhead p50 (median of rounds) %s ms, hello p50 %s ms\n", n, a[int((NR + 1) / 2)], h[int((NR + 1) / 2)] }'
done
for name in before after pocketbase; do
    awk -v n="$name" '$0 ~ "what=hello server=" n " " {
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        print v["rps"], v["cpu_us_per_request"] }' "$work/rounds" | sort -n |
        awk -v n="$name" '{ r[NR] = $1; c[NR] = $2 } END { printf "%s: hello req/s (median of rounds) %s, CPU per request %s µs\n", n, r[int((NR + 1) / 2)], c[int((NR + 1) / 2)] }'
done
say "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
