#!/usr/bin/env bash
# Locale throughput beside `{ __typename }`, in one run, on loopback only: wrk
# (1 thread, CONNECTIONS keep-alive connections, DURATION each, one after another)
# posting to one release `nimbus serve` on SQLite with default settings, except that
# 127.0.0.1 is a trusted proxy so that each request can place a public client address:
#   typename   {"query":"{ __typename }"}                      the reference
#   caller     { locale { countryCode } }, X-Forwarded-For 8.8.8.8 (a GeoIP lookup)
#   countries  { locale { countries { code name } } }, X-Nimbus-Locale: de (250 names)
# Goals (issue 25): caller ≥ 80% and countries ≥ 50% of typename's req/s.
# Prints the machine, every figure, the verdicts and a Markdown block for
# benches/RESULTS.md.
#
# Usage: benches/locale.sh       (from anywhere; builds the release binary first,
#                                 honouring CARGO_TARGET_DIR; under a minute after it)
# Knobs (environment): CONNECTIONS=32 DURATION=10s QUIET_WAIT=60
#   NIMBUS_BIN=path       use this binary instead of building it
# Needs wrk, curl and jq.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=benches/lib.sh
source "$root/benches/lib.sh"

CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-10s}
QUIET_WAIT=${QUIET_WAIT:-60}
for tool in wrk curl jq; do command -v "$tool" >/dev/null || die "$tool is needed"; done

open_workspace locale-bench
noisy=()

report_machine
say "wrk:      $(wrk --version 2>&1 | awk 'NR == 1 { print $2 }')"

nimbus_binary "$work"

section "Server"
free_port && port=$REPLY
url="http://127.0.0.1:$port/v1/graphql"
env -u NIMBUS_DATABASE_URL -u NIMBUS_REDIS_URL -u NIMBUS_SECRET -u NIMBUS_DATA_DIR -u NIMBUS_LISTEN \
    -u NIMBUS_GEOIP_DB NIMBUS_LOG=warn NIMBUS_TRUSTED_PROXIES=127.0.0.1 \
    "$work/nimbus" serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
    >"$work/nimbus.out" 2>"$work/nimbus.err" &
nimbus_pid=$!
started_pids+=("$nimbus_pid")
wait_for_port "$port" "$nimbus_pid" "$work/nimbus.err"

# `script NAME BODY EXPECT [HEADER...]`: a wrk script posting BODY with HEADERs, and
# counting answers that lack EXPECT as errors; each answer is checked once by curl.
script() {
    local name=$1 body=$2 expect=$3
    shift 3
    local headers="" args=() header
    for header in "$@"; do
        headers+="wrk.headers[\"${header%%: *}\"] = \"${header#*: }\""$'\n'
        args+=(-H "$header")
    done
    cat >"$work/$name.lua" <<LUA
wrk.method = "POST"
wrk.body = [[$body]]
wrk.headers["Content-Type"] = "application/json"
$headers
bad = 0
response = function(status, headers, body)
    if status ~= 200 or not string.find(body, [[$expect]], 1, true) then bad = bad + 1 end
end
done = function(summary, latency, requests)
    io.write(string.format("BAD %d\n", bad))
end
LUA
    local answer
    answer=$(curl -sf "$url" -H 'Content-Type: application/json' "${args[@]}" --data-binary "$body")
    [[ $answer == *"$expect"* ]] || die "$name answered $answer, expected $expect"
    say "$name: $body ${*:-} -> ${answer:0:120}"
}
script typename '{"query":"{ __typename }"}' '"__typename":"Query"'
script caller '{"query":"{ locale { countryCode } }"}' '"countryCode":"US"' 'X-Forwarded-For: 8.8.8.8'
script countries '{"query":"{ locale { countries { code name } } }"}' '"name":"Deutschland"' 'X-Nimbus-Locale: de'

declare -A rps=() p50=() p99=() bad=()
for name in typename caller countries; do
    section "$name"
    wait_for_quiet || noisy+=("$name (${REPLY}%)")
    wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/$name.lua" "$url" >"$work/$name.wrk"
    cat "$work/$name.wrk"
    rps[$name]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$work/$name.wrk")
    p50[$name]=$(awk '$1 == "50%" { print $2 }' "$work/$name.wrk")
    p99[$name]=$(awk '$1 == "99%" { print $2 }' "$work/$name.wrk")
    bad[$name]=$(awk '/^BAD / { print $2 }' "$work/$name.wrk")
    errors=$(awk '/Non-2xx|Socket errors/' "$work/$name.wrk")
    [[ -z $errors ]] || bad[$name]="${bad[$name]} ($errors)"
done

ratio() { awk -v a="${rps[$1]}" -v b="${rps[typename]}" 'BEGIN { printf "%.0f", 100 * a / b }'; }
verdict() { (($(ratio "$1") >= $2)) && echo "met" || echo "NOT met"; }

section "Results"
cat <<MD
Measured $(date -u '+%Y-%m-%d %H:%M') UTC at commit \`$commit\` with \`benches/locale.sh\`
($machine; wrk 1 thread, $CONNECTIONS connections, $DURATION each; release \`nimbus serve\`,
SQLite, \`NIMBUS_TRUSTED_PROXIES=127.0.0.1\`).

| request | req/s | p50 | p99 | of \`{ __typename }\` | goal | wrong answers |
| --- | ---: | ---: | ---: | ---: | --- | ---: |
| \`{ __typename }\` | ${rps[typename]} | ${p50[typename]} | ${p99[typename]} | 100% | reference | ${bad[typename]} |
| \`{ locale { countryCode } }\` (8.8.8.8 forwarded) | ${rps[caller]} | ${p50[caller]} | ${p99[caller]} | $(ratio caller)% | ≥ 80%: $(verdict caller 80) | ${bad[caller]} |
| \`{ locale { countries { code name } } }\` in German (250 countries) | ${rps[countries]} | ${p50[countries]} | ${p99[countries]} | $(ratio countries)% | ≥ 50%: $(verdict countries 50) | ${bad[countries]} |
MD
if ((${#noisy[@]})); then
    say ""
    say "Disturbed (the machine was busy before): ${noisy[*]}"
fi
