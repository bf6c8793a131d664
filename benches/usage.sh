#!/usr/bin/env bash
# The cost of usage counters: `{ __typename }` throughput of two release `nimbus
# serve` on SQLite, one with `NIMBUS_USAGE=on` (the default), one with `off`,
# measured in turns (on, off, on, off, …) so that noise from a shared machine shows
# as the spread between rounds of the same kind. wrk, 1 thread, CONNECTIONS
# keep-alive connections, DURATION per round, loopback only.
# Goal (issue 26): on costs under 2% of off's req/s.
# Prints the machine, every round, the means, the ratio and a Markdown block for
# benches/RESULTS.md.
#
# Usage: benches/usage.sh        (from anywhere; builds the release binary first,
#                                 honouring CARGO_TARGET_DIR)
# Knobs (environment): CONNECTIONS=32 DURATION=10s ROUNDS=3 QUIET_WAIT=60
#   NIMBUS_BIN=path       use this binary instead of building it
# Needs wrk, curl and jq.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=benches/lib.sh
source "$root/benches/lib.sh"

CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
QUIET_WAIT=${QUIET_WAIT:-60}
for tool in wrk curl jq; do command -v "$tool" >/dev/null || die "$tool is needed"; done

open_workspace usage-bench
noisy=()

report_machine
say "wrk:      $(wrk --version 2>&1 | awk 'NR == 1 { print $2 }')"

nimbus_binary "$work"

section "Servers"
declare -A url=()
for mode in on off; do
    free_port && port=$REPLY
    url[$mode]="http://127.0.0.1:$port/v1/graphql"
    env -u NIMBUS_DATABASE_URL -u NIMBUS_REDIS_URL -u NIMBUS_SECRET -u NIMBUS_DATA_DIR -u NIMBUS_LISTEN \
        NIMBUS_LOG=warn NIMBUS_USAGE=$mode \
        "$work/nimbus" serve --listen "127.0.0.1:$port" --data-dir "$work/data-$mode" \
        >"$work/nimbus-$mode.out" 2>"$work/nimbus-$mode.err" &
    pid=$!
    started_pids+=("$pid")
    wait_for_port "$port" "$pid" "$work/nimbus-$mode.err"
    answer=$(curl -sf "${url[$mode]}" -H 'Content-Type: application/json' --data-binary '{"query":"{ __typename }"}')
    [[ $answer == *'"__typename":"Query"'* ]] || die "usage $mode answered $answer"
    say "usage $mode: ${url[$mode]} -> $answer"
done

cat >"$work/typename.lua" <<'LUA'
wrk.method = "POST"
wrk.body = [[{"query":"{ __typename }"}]]
wrk.headers["Content-Type"] = "application/json"
bad = 0
response = function(status, headers, body)
    if status ~= 200 or not string.find(body, [["__typename":"Query"]], 1, true) then bad = bad + 1 end
end
done = function(summary, latency, requests)
    io.write(string.format("BAD %d\n", bad))
end
LUA

declare -A sum=() rounds=()
table=""
for round in $(seq 1 "$ROUNDS"); do
    for mode in on off; do
        section "round $round, usage $mode"
        wait_for_quiet || noisy+=("round $round $mode (${REPLY}%)")
        wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/typename.lua" "${url[$mode]}" >"$work/r$round-$mode.wrk"
        cat "$work/r$round-$mode.wrk"
        rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$work/r$round-$mode.wrk")
        p99=$(awk '$1 == "99%" { print $2 }' "$work/r$round-$mode.wrk")
        bad=$(awk '/^BAD / { print $2 }' "$work/r$round-$mode.wrk")
        sum[$mode]=$(( ${sum[$mode]:-0} + rps ))
        rounds[$mode]="${rounds[$mode]:-} $rps"
        table+="| $round | $mode | $rps | $p99 | $bad |"$'\n'
    done
done

section "Results"
mean_on=$(( sum[on] / ROUNDS ))
mean_off=$(( sum[off] / ROUNDS ))
cost=$(awk -v on="$mean_on" -v off="$mean_off" 'BEGIN { printf "%.1f", 100 * (off - on) / off }')
spread() { tr ' ' '\n' <<<"$1" | awk 'NF { if (min == "" || $1 < min) min = $1; if ($1 > max) max = $1 } END { printf "%.1f", 100 * (max - min) / max }'; }
verdict=$(awk -v c="$cost" 'BEGIN { print (c < 2) ? "met" : "NOT met" }')
say "usage on:  rounds${rounds[on]}, mean $mean_on req/s, spread $(spread "${rounds[on]}")%"
say "usage off: rounds${rounds[off]}, mean $mean_off req/s, spread $(spread "${rounds[off]}")%"
say "cost of the counters: $cost% of off's req/s (goal < 2%: $verdict)"
((${#noisy[@]} == 0)) || say "the machine was busy during: ${noisy[*]}"

section "Markdown"
cat <<MD
| round | usage | req/s | p99 | bad |
|---|---|---|---|---|
${table}
On: mean $mean_on req/s (spread $(spread "${rounds[on]}")%); off: mean $mean_off req/s
(spread $(spread "${rounds[off]}")%); the counters cost $cost% (goal < 2%: $verdict).
MD
