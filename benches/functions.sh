#!/usr/bin/env bash
# Functions on one release `nimbus serve` (SQLite, in-process bus, default sandbox
# settings) beside PocketBase POCKETBASE_VERSION serving the same handlers as JS
# route hooks (`routerAdd` in pb_hooks), in one run, on loopback only:
#   cold       a new deployment activated, then timed from `activateDeployment`'s
#              answer to the first execution's response (ROUNDS rounds)
#   overhead   a hello-world execution over its HTTP route beside `{ __typename }`,
#              one request at a time, alternated: the difference of the medians is
#              what an execution costs the server (fresh context, run, record)
#   hello      wrk (1 thread, CONNECTIONS connections, DURATION) on a hello-world
#              handler: GET /v1/functions/hello (a fresh context per execution)
#              /v1/functions/hello-warm (`warm: true`, ADR 30) and
#              /v1/functions/hello-quiet (warm, `logging: false`: no record of its
#              successes, ADR 31) vs PocketBase's GET /hello; with each server's
#              CPU time per request (utime + stime of its process over the run,
#              from /proc)
#   read       the same with a handler reading one record: `nimbus.graphql`
#              `document(…)` vs `$app.findRecordById`
#   memory     RSS at rest, at its peak while EXECUTIONS asynchronous executions
#              (200 ms each) are queued and run, and after
# Goals (issue 24): cold < 5 ms; overhead p50 < 0.5 ms; hello ≥ 2× PocketBase;
# memory < 1 MiB per queued execution and back near idle after.
# Prints the machine, every figure and a Markdown block for benches/RESULTS.md.
#
# Usage: benches/functions.sh    (from anywhere; builds the release binary first,
#                                 honouring CARGO_TARGET_DIR; about 2 minutes after it)
# Knobs (environment): CONNECTIONS=32 DURATION=10s ROUNDS=50 OVERHEAD_ROUNDS=2000
#   EXECUTIONS=1000 QUIET_WAIT=60 POCKETBASE_VERSION=0.40.6
#   BENCH_CACHE=benches/.cache   where PocketBase is installed (ignored by git)
#   NIMBUS_BIN=path              use this binary instead of building it
# Needs wrk, curl, jq and python3 (with venv and pip, for PocketBase).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
here=$root/benches
# shellcheck source=benches/lib.sh
source "$root/benches/lib.sh"

CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-50}
OVERHEAD_ROUNDS=${OVERHEAD_ROUNDS:-2000}
EXECUTIONS=${EXECUTIONS:-1000}
QUIET_WAIT=${QUIET_WAIT:-60}
POCKETBASE_VERSION=${POCKETBASE_VERSION:-0.40.6}
BENCH_CACHE=${BENCH_CACHE:-$root/benches/.cache}
for tool in wrk curl jq python3; do command -v "$tool" >/dev/null || die "$tool is needed"; done

open_workspace functions-bench
noisy=()

report_machine
say "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
say "wrk:      $(wrk --version 2>&1 | awk 'NR == 1 { print $2 }')"
install_pocketbase

nimbus_binary "$work"

section "Nimbus"
free_port && port=$REPLY
base="http://127.0.0.1:$port"
# Deployments unlimited: the cold-start rounds upload one each.
env -u NIMBUS_DATABASE_URL -u NIMBUS_REDIS_URL -u NIMBUS_SECRET -u NIMBUS_DATA_DIR -u NIMBUS_LISTEN \
    NIMBUS_LOG=warn NIMBUS_FUNCTIONS_DEPLOYMENTS_PER_MINUTE=0 \
    "$work/nimbus" serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
    >"$work/nimbus.out" 2>"$work/nimbus.err" &
nimbus_pid=$!
started_pids+=("$nimbus_pid")
wait_for_port "$port" "$nimbus_pid" "$work/nimbus.err"
admin_key_from "$work/nimbus.out"
python3 "$here/functions/bench.py" setup "$base" "$admin_key" | tail -n 1

section "PocketBase $pocketbase_version"
free_port && pb_port=$REPLY
pb_base="http://127.0.0.1:$pb_port"
mkdir -p "$work/pocketbase/pb_hooks"
cat >"$work/pocketbase/pb_hooks/bench.pb.js" <<'JS'
routerAdd("GET", "/hello", (e) => e.json(200, { message: "Hello" }));
routerAdd("GET", "/read/{id}", (e) => {
    const record = $app.findRecordById("posts", e.request.pathValue("id"));
    return e.json(200, { title: record.get("title") });
});
JS
pb_su_password='bench-superuser-password-1'
"$pocketbase" superuser upsert admin@bench.local "$pb_su_password" \
    --dir "$work/pocketbase/pb_data" >"$work/pocketbase.out" 2>&1 ||
    { cat "$work/pocketbase.out"; die "pocketbase superuser upsert failed"; }
# In its own directory: it looks for pb_hooks there.
(cd "$work/pocketbase" && exec "$pocketbase" serve --http "127.0.0.1:$pb_port" \
    --dir "$work/pocketbase/pb_data") >>"$work/pocketbase.out" 2>&1 &
pb_pid=$!
started_pids+=("$pb_pid")
wait_for_port "$pb_port" "$pb_pid" "$work/pocketbase.out"
record=$(python3 "$here/functions/bench.py" pocketbase "$pb_base" admin@bench.local "$pb_su_password" |
    tail -n 1 | sed -n 's/.*record=\([^ ]*\).*/\1/p')
say "record: $record"

# `measure NAME URL EXPECT PID`: wrk GETs of URL; answers lacking EXPECT count as
# bad; the CPU time process PID used over the run, per request served.
declare -A rps=() p50=() p99=() bad=() cpu=()
hz=$(getconf CLK_TCK)
ticks_of() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
measure() {
    local name=$1 url=$2 expect=$3 pid=$4
    local answer
    answer=$(curl -sf "$url") || die "$name: $url failed"
    [[ $answer == *"$expect"* ]] || die "$name answered $answer, expected $expect"
    cat >"$work/$name.lua" <<LUA
bad = 0
response = function(status, headers, body)
    if status ~= 200 or not string.find(body, [[$expect]], 1, true) then bad = bad + 1 end
end
done = function(summary, latency, requests)
    io.write(string.format("BAD %d\n", bad))
end
LUA
    section "$name: $url"
    wait_for_quiet || noisy+=("$name (${REPLY}%)")
    local before after
    before=$(ticks_of "$pid")
    wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/$name.lua" "$url" >"$work/$name.wrk"
    after=$(ticks_of "$pid")
    cat "$work/$name.wrk"
    rps[$name]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$work/$name.wrk")
    local requests
    requests=$(awk '/requests in/ { print $1 }' "$work/$name.wrk")
    cpu[$name]=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$requests" 'BEGIN { printf "%.0f", t / hz / n * 1e6 }')
    say "cpu: ${cpu[$name]} µs per request; load $(cut -d' ' -f1 /proc/loadavg)"
    p50[$name]=$(awk '$1 == "50%" { print $2 }' "$work/$name.wrk")
    p99[$name]=$(awk '$1 == "99%" { print $2 }' "$work/$name.wrk")
    bad[$name]=$(awk '/^BAD / { print $2 }' "$work/$name.wrk")
    local errors
    errors=$(awk '/Non-2xx|Socket errors/' "$work/$name.wrk")
    [[ -z $errors ]] || bad[$name]="${bad[$name]} ($errors)"
}

section "Cold start ($ROUNDS rounds)"
wait_for_quiet || noisy+=("cold (${REPLY}%)")
cold=$(python3 "$here/functions/bench.py" cold "$base" "$admin_key" "$ROUNDS" | tail -n 1)
say "$cold"

section "Per-execution overhead ($OVERHEAD_ROUNDS rounds)"
wait_for_quiet || noisy+=("overhead (${REPLY}%)")
overhead=$(python3 "$here/functions/bench.py" overhead "$base" "$OVERHEAD_ROUNDS" | tail -n 1)
say "$overhead"

measure nimbus-hello "$base/v1/functions/hello" '"message":"Hello"' "$nimbus_pid"
measure nimbus-hello-warm "$base/v1/functions/hello-warm" '"message":"Hello"' "$nimbus_pid"
measure nimbus-hello-quiet "$base/v1/functions/hello-quiet" '"message":"Hello"' "$nimbus_pid"
measure pocketbase-hello "$pb_base/hello" '"message":"Hello"' "$pb_pid"
measure nimbus-read "$base/v1/functions/reader/p1" '"title":"Hello"' "$nimbus_pid"
measure nimbus-read-warm "$base/v1/functions/reader-warm/p1" '"title":"Hello"' "$nimbus_pid"
measure nimbus-read-quiet "$base/v1/functions/reader-quiet/p1" '"title":"Hello"' "$nimbus_pid"
measure pocketbase-read "$pb_base/read/$record" '"title":"Hello"' "$pb_pid"

section "Memory ($EXECUTIONS asynchronous executions)"
wait_for_quiet || noisy+=("memory (${REPLY}%)")
mem=$(python3 "$here/functions/bench.py" memory "$base" "$admin_key" "$nimbus_pid" "$EXECUTIONS" | tail -n 1)
say "$mem"

times_of() { awk -v a="${rps[$1]}" -v b="${rps[$2]}" 'BEGIN { printf "%.2f", a / b }'; }
at_least() { awk -v r="$1" -v g="$2" 'BEGIN { exit !(r >= g) }' && echo "met" || echo "NOT met"; }
below() { awk -v v="$1" -v g="$2" 'BEGIN { exit !(v < g) }' && echo "met" || echo "NOT met"; }
hello_ratio=$(times_of nimbus-hello pocketbase-hello)
warm_ratio=$(times_of nimbus-hello-warm pocketbase-hello)
read_ratio=$(times_of nimbus-read pocketbase-read)
warm_read_ratio=$(times_of nimbus-read-warm pocketbase-read)
quiet_ratio=$(times_of nimbus-hello-quiet pocketbase-hello)
quiet_read_ratio=$(times_of nimbus-read-quiet pocketbase-read)
cold_p50=$(field p50_ms "$cold")
overhead_p50=$(field overhead_p50_ms "$overhead")
per_kib=$(field per_execution_kib "$mem")

section "Results"
cat <<MD
Measured $(date -u '+%Y-%m-%d %H:%M') UTC at commit \`$commit\` with \`benches/functions.sh\`
($machine, shared with other work: load $(cut -d' ' -f1-3 /proc/loadavg) at the end; wrk 1
thread, $CONNECTIONS connections, $DURATION each; release \`nimbus serve\`, SQLite, default
sandbox settings; PocketBase $pocketbase_version with the same handlers in \`pb_hooks\`).

| measurement | Nimbus | PocketBase | ratio | goal |
| --- | ---: | ---: | ---: | --- |
| cold start: \`activateDeployment\` answered → first response, p50 / p90 / max of $ROUNDS | $cold_p50 / $(field p90_ms "$cold") / $(field max_ms "$cold") ms | | | < 5 ms: $(below "$cold_p50" 5) |
| hello-world execution over its route, p50, one at a time | $(field hello_p50_ms "$overhead") ms | | | |
| \`{ __typename }\`, p50, one at a time (same connection, alternated) | $(field typename_p50_ms "$overhead") ms | | | |
| per-execution overhead (difference of the two p50s) | $overhead_p50 ms | | | < 0.5 ms: $(below "$overhead_p50" 0.5) |
| hello world, fresh context, req/s (p50 / p99) | ${rps[nimbus-hello]} (${p50[nimbus-hello]} / ${p99[nimbus-hello]}) | ${rps[pocketbase-hello]} (${p50[pocketbase-hello]} / ${p99[pocketbase-hello]}) | ${hello_ratio}× | |
| hello world, warm context, req/s (p50 / p99) | ${rps[nimbus-hello-warm]} (${p50[nimbus-hello-warm]} / ${p99[nimbus-hello-warm]}) | ${rps[pocketbase-hello]} | ${warm_ratio}× | ≥ 2×: $(at_least "$warm_ratio" 2) |
| hello world, warm, \`logging: false\`, req/s (p50 / p99) | ${rps[nimbus-hello-quiet]} (${p50[nimbus-hello-quiet]} / ${p99[nimbus-hello-quiet]}) | ${rps[pocketbase-hello]} | ${quiet_ratio}× | ≥ 2×: $(at_least "$quiet_ratio" 2) |
| server CPU per hello-world request: fresh / warm / warm without record | ${cpu[nimbus-hello]} / ${cpu[nimbus-hello-warm]} / ${cpu[nimbus-hello-quiet]} µs | ${cpu[pocketbase-hello]} µs | | |
| read one record, fresh context, req/s (p50 / p99) | ${rps[nimbus-read]} (${p50[nimbus-read]} / ${p99[nimbus-read]}) | ${rps[pocketbase-read]} (${p50[pocketbase-read]} / ${p99[pocketbase-read]}) | ${read_ratio}× | |
| read one record, warm context, req/s (p50 / p99) | ${rps[nimbus-read-warm]} (${p50[nimbus-read-warm]} / ${p99[nimbus-read-warm]}) | ${rps[pocketbase-read]} | ${warm_read_ratio}× | |
| read one record, warm, \`logging: false\`, req/s (p50 / p99) | ${rps[nimbus-read-quiet]} (${p50[nimbus-read-quiet]} / ${p99[nimbus-read-quiet]}) | ${rps[pocketbase-read]} | ${quiet_read_ratio}× | ≥ 2×: $(at_least "$quiet_read_ratio" 2) |
| server CPU per read request: fresh / warm / warm without record | ${cpu[nimbus-read]} / ${cpu[nimbus-read-warm]} / ${cpu[nimbus-read-quiet]} µs | ${cpu[pocketbase-read]} µs | | |
| RSS idle → peak with $EXECUTIONS async executions queued → after | $(field idle_mib "$mem") → $(field peak_mib "$mem") → $(field after_mib "$mem") MiB | | | |
| RSS per queued execution | $per_kib KiB | | | < 1 MiB: $(below "$per_kib" 1024) |

Wrong answers: nimbus-hello ${bad[nimbus-hello]}, nimbus-hello-warm ${bad[nimbus-hello-warm]},
nimbus-hello-quiet ${bad[nimbus-hello-quiet]}, pocketbase-hello ${bad[pocketbase-hello]},
nimbus-read ${bad[nimbus-read]}, nimbus-read-warm ${bad[nimbus-read-warm]}, nimbus-read-quiet
${bad[nimbus-read-quiet]}, pocketbase-read ${bad[pocketbase-read]}. The $EXECUTIONS
executions were queued in $(field queued_s "$mem") s and all ended $(field ran_s "$mem") s
after the first was queued.
MD
if ((${#noisy[@]})); then
    say ""
    say "Disturbed (the machine was busy before): ${noisy[*]}"
fi
