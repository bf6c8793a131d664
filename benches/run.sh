#!/usr/bin/env bash
# Measures Nimbus against a bare axum handler in one run, on loopback only:
#   (a) the reference handler under the load tool and under wrk,
#   (b) Nimbus `{ __typename }` over POST the same two ways, then, on the same
#       server, a signed-in `{ account { id email } }` (Authorization: Bearer),
#   (c) Nimbus's resident memory right after start and after the HTTP load,
#   (d) the memory 10,000 idle WebSocket subscribers add, and one event's fan-out,
#   (e) sign-ins (createEmailPasswordSession) per second on a server started with
#       `--rate-limits false`, beside Argon2id password checks per second on one core.
# Prints the machine, every figure, the Nimbus/reference ratios and the goals.
#
# Usage: benches/run.sh            (from anywhere; builds the release binaries first)
# Knobs (environment): DURATION=10s WARMUP=2s CONNECTIONS=32 WS_CONNECTIONS=10000
#                      SIGNIN_CONNECTIONS=8 ARGON2_DURATION=5s
#                      REFERENCE_PORT=18181 NIMBUS_PORT=18180 QUIET_WAIT=120
# The load generator shares the machine with the server, so anything else using the
# CPU skews the figures: before each throughput measurement the script waits up to
# QUIET_WAIT seconds for the machine to be idle, and says so when it was not.
set -euo pipefail

cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-32}
WS_CONNECTIONS=${WS_CONNECTIONS:-10000}
SIGNIN_CONNECTIONS=${SIGNIN_CONNECTIONS:-8}
ARGON2_DURATION=${ARGON2_DURATION:-5s}
REFERENCE_PORT=${REFERENCE_PORT:-18181}
NIMBUS_PORT=${NIMBUS_PORT:-18180}
QUIET_WAIT=${QUIET_WAIT:-120}
BODY='{"query":"{ __typename }"}'
# What both the reference and Nimbus answer to BODY; a response without it is counted.
EXPECT='"__typename":"Query"'
# The account the identity measurements sign in to.
EMAIL=bench@example.com
PASSWORD='bench password 1234'
ACCOUNT_BODY='{"query":"{ account { id email } }"}'

work=$(mktemp -d)
started_pids=()
cleanup() {
    local pid
    for pid in "${started_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=benches/lib.sh
source benches/lib.sh

# Every connection is a file descriptor on both ends: the server and the load tool
# each need more than WS_CONNECTIONS.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if (($(ulimit -n) < WS_CONNECTIONS + 1000)); then
    say "error: ulimit -n is $(ulimit -n); $WS_CONNECTIONS connections need more" >&2
    exit 1
fi

for port in "$REFERENCE_PORT" "$NIMBUS_PORT"; do
    if port_taken "$port"; then
        say "error: 127.0.0.1:$port is already in use (set REFERENCE_PORT / NIMBUS_PORT)" >&2
        exit 1
    fi
done

# Set when other work kept the machine busy before a measurement.
noisy=no

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f%%", 100 * a / b; else print "n/a" }'; }
# wrk prints latencies as 512.00us, 1.23ms or 1.01s; this gives milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else print "n/a" }'
}

section "Machine"
say "date:     $(date -u '+%Y-%m-%d %H:%M UTC')"
if commit=$(git rev-parse --short HEAD 2>/dev/null); then
    git diff --quiet HEAD -- src migrations build.rs Cargo.toml Cargo.lock ||
        commit+=" (with uncommitted changes)"
else
    commit="unknown (not a git checkout)"
fi
say "commit:   $commit"
say "cpu:      $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" \
    "(family $(awk -F': ' '/^cpu family/ { print $2; exit }' /proc/cpuinfo)," \
    "model $(awk -F': ' '/^model[[:space:]]*:/ { print $2; exit }' /proc/cpuinfo)," \
    "$(awk -F': ' '/^cpu MHz/ { printf "%.0f MHz", $2; exit }' /proc/cpuinfo))" \
    "$(grep -q '^flags.* hypervisor' /proc/cpuinfo && echo 'virtual machine' || echo 'bare metal')"
say "memory:   $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
say "kernel:   $(uname -sr)"
say "rustc:    $(rustc --version)"
if command -v wrk >/dev/null; then
    say "wrk:      $(wrk -v 2>&1 | head -n 1 || true)"
else
    say "wrk:      not installed (apt-get install wrk); the wrk rows are left out"
fi
say "ulimit:   -n $(ulimit -n)"

section "Build"
# Just the two binaries (`--benches` would also build the library's own test harness).
cargo build --release --bin nimbus --bench load --message-format=json-render-diagnostics \
    >"$work/build.json"
# The paths cargo reports, so CARGO_TARGET_DIR and the like are honoured.
executable() {
    jq -r --arg kind "$1" --arg name "$2" 'select(.reason == "compiler-artifact"
        and .target.name == $name and .target.kind == [$kind] and .executable != null)
        | .executable' "$work/build.json" | tail -n 1
}
# Copies, so a build started meanwhile in the same target directory cannot swap them.
cp "$(executable bench load)" "$work/load"
cp "$(executable bin nimbus)" "$work/nimbus"
load=$work/load
nimbus=$work/nimbus
say "built:     $(executable bin nimbus), $(executable bench load)"

SIGNIN_BODY=$(jq -cn --arg email "$EMAIL" --arg password "$PASSWORD" '{query:
    "mutation { createEmailPasswordSession(input: {email: \"\($email)\", password: \"\($password)\"}) { secret } }"}')
# `wrk_script FILE BODY [HEADER_NAME HEADER_VALUE]`: a wrk Lua script that POSTs BODY.
wrk_script() {
    {
        printf 'wrk.method = "POST"\nwrk.body = %s\n' "$(jq -R . <<<"$2")"
        printf 'wrk.headers["Content-Type"] = "application/json"\n'
        if (($# > 2)); then
            printf 'wrk.headers[%s] = %s\n' "$(jq -R . <<<"$3")" "$(jq -R . <<<"$4")"
        fi
    } >"$1"
}

# CPU ticks process PID has used.
process_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
# CPU seconds used by the children this shell has waited for, into `children`. The
# `times` builtin must run in this shell, not in a $(subshell), to see them.
children=0
# `watched SERVER_PID OUT COMMAND...`: runs the load generator COMMAND into OUT and
# sets `others` to the share of the machine (percent) that neither it nor the server
# used meanwhile: other work that would skew the figure. Also sets `server_cores`, the
# server's CPU time over the wall time: how many cores it kept busy on average.
others=0
server_cores=0
watched() {
    local server=$1 out=$2 busy0 all0 busy1 all1 server0 client0 wall0 status=0
    shift 2
    read -r busy0 all0 < <(machine_ticks)
    server0=$(process_ticks "$server")
    children_seconds
    client0=$children
    wall0=$(date +%s%N)
    "$@" >"$out" 2>&1 &
    wait $! || status=$?
    read -r busy1 all1 < <(machine_ticks)
    server_cores=$(awk -v ticks=$(($(process_ticks "$server") - server0)) \
        -v ns=$(($(date +%s%N) - wall0)) -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.2f", (ns > 0) ? ticks / hz / (ns / 1e9) : 0 }')
    children_seconds
    others=$(awk -v busy=$((busy1 - busy0)) -v all=$((all1 - all0)) \
        -v server=$(($(process_ticks "$server") - server0)) \
        -v client="$(awk -v a="$children" -v b="$client0" 'BEGIN { print a - b }')" \
        -v hz="$(getconf CLK_TCK)" 'BEGIN {
            o = busy - server - client * hz; if (o < 0) o = 0; printf "%.0f", (all > 0) ? 100 * o / all : 0 }')
    cat "$out"
    if ((status != 0)); then
        say "error: the load generator failed (exit status $status)" >&2
        exit 1
    fi
}
# `measured SERVER_PID OUT COMMAND...`: `watched`, again (up to 3 times in all) when
# other work used more than 10% of the machine meanwhile.
measured() {
    local attempt
    for attempt in 1 2 3; do
        wait_for_quiet || noisy=yes
        watched "$@"
        if ((others <= 10)); then
            say "(other work used ${others}% of the machine during this measurement)"
            return
        fi
        say "DISTURBED: other work used ${others}% of the machine during attempt $attempt"
    done
    noisy=yes
}

# Figures by "NAME.tool" (the load tool's RESULT line) and "NAME.wrk_rps" etc.
declare -A result=()
# `measure NAME SERVER_PID URL BODY EXPECT [HEADER_NAME HEADER_VALUE]`: the load tool
# (counting responses without EXPECT) then wrk, POSTing BODY to URL, into `result`.
measure() {
    local name=$1 server=$2 url=$3 body=$4 expect=$5
    local -a header=()
    shift 5
    if (($# == 2)); then
        header=(--header "$1: $2")
    fi
    say "-- load tool: $CONNECTIONS connections, $DURATION after $WARMUP warm-up"
    measured "$server" "$work/$name.tool" "$load" http --url "$url" --body "$body" \
        --expect "$expect" "${header[@]}" \
        --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP"
    result[$name.tool]=$(grep '^RESULT' "$work/$name.tool")
    result[$name.tool_others]=$others
    if command -v wrk >/dev/null; then
        wrk_script "$work/$name.lua" "$body" "$@"
        say "-- wrk -t1 -c$CONNECTIONS -d$DURATION"
        measured "$server" "$work/$name.wrk" \
            wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/$name.lua" "$url"
        result[$name.wrk_rps]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$work/$name.wrk")
        result[$name.wrk_p50]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$work/$name.wrk")")
        result[$name.wrk_p99]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$work/$name.wrk")")
        result[$name.wrk_bad]=$(awk '/Non-2xx/ { n = $NF } END { print n + 0 }' "$work/$name.wrk")
        result[$name.wrk_others]=$others
    fi
}

section "(a) Reference: bare axum handler"
"$load" reference --listen "127.0.0.1:$REFERENCE_PORT" >"$work/reference.out" 2>&1 &
started_pids+=($!)
reference_pid=$!
wait_for_port "$REFERENCE_PORT" "$reference_pid" "$work/reference.out"
measure reference "$reference_pid" "http://127.0.0.1:$REFERENCE_PORT/" "$BODY" "$EXPECT"
kill "$reference_pid"
wait "$reference_pid" 2>/dev/null || true

# `start_nimbus NAME PORT [SERVE_OPTION...]`: a Nimbus on a fresh data directory; sets
# `nimbus_pid` and `admin_key` (the key it prints on first start).
start_nimbus() {
    local name=$1 port=$2
    shift 2
    # Every load connection comes from 127.0.0.1: no cap per client.
    "$nimbus" serve --listen "127.0.0.1:$port" --data-dir "$work/data-$name" \
        --max-connections-per-client 0 "$@" \
        >"$work/$name.out" 2>"$work/$name.err" &
    started_pids+=($!)
    nimbus_pid=$!
    wait_for_port "$port" "$nimbus_pid" "$work/$name.err"
    for _ in $(seq 100); do
        grep -q 'X-Nimbus-Key:' "$work/$name.out" && break
        sleep 0.1
    done
    admin_key=$(awk '/X-Nimbus-Key:/ { print $2; exit }' "$work/$name.out")
    [[ -n $admin_key ]] || { say "error: Nimbus printed no admin key" >&2; cat "$work/$name.out" >&2; exit 1; }
    sleep 1
}
# `ws_idle PORT PID OUT [--fanout]`: the subscribers' measurement, shown and kept in OUT.
ws_idle() {
    local port=$1 pid=$2 out=$3
    shift 3
    "$load" ws-idle --url "ws://127.0.0.1:$port/v1/graphql/ws" --key "$admin_key" \
        --connections "$WS_CONNECTIONS" --server-pid "$pid" "$@" | tee "$out"
}
# Operations Nimbus has executed, from its own counter. Reading /metrics also drains
# the latency samples the exporter holds until then, so it comes after the RSS reading.
operations_served() {
    curl -fsS "http://127.0.0.1:$1/metrics" |
        awk '/^nimbus_graphql_requests_total/ { n += $NF } END { printf "%.0f", n }'
}

# `graphql PORT BODY [CURL_OPTION...]`: one GraphQL request; prints the response and
# fails when it carries errors.
graphql() {
    local port=$1 body=$2 response
    shift 2
    response=$(curl -fsS "http://127.0.0.1:$port/v1/graphql" -H 'Content-Type: application/json' \
        "$@" --data-binary "$body")
    if jq -e '.errors' <<<"$response" >/dev/null; then
        say "error: $body answered $response" >&2
        exit 1
    fi
    printf '%s\n' "$response"
}
# `sign_up PORT`: the benchmark's account, created on the Nimbus at PORT.
sign_up() {
    graphql "$1" "$(jq -cn --arg email "$EMAIL" --arg password "$PASSWORD" '{query:
        "mutation { createAccount(input: {email: \"\($email)\", password: \"\($password)\"}) { id } }"}')" >/dev/null
}
# `sign_in PORT`: a session secret for that account.
sign_in() { graphql "$1" "$SIGNIN_BODY" | jq -r '.data.createEmailPasswordSession.secret'; }
peak_mib() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

section "(b, c) Nimbus { __typename } and a signed-in { account { id email } } over POST"
start_nimbus nimbus "$NIMBUS_PORT"
main_pid=$nimbus_pid
rss_start=$(rss_mib "$main_pid")
say "Nimbus pid $main_pid, RSS right after start: $rss_start MiB"
graphql_url="http://127.0.0.1:$NIMBUS_PORT/v1/graphql"
measure nimbus "$main_pid" "$graphql_url" "$BODY" "$EXPECT"
sleep 2
rss_after_http=$(rss_mib "$main_pid")
say "Nimbus RSS 2 s after the { __typename } load: $rss_after_http MiB"
# One sign-up and one sign-in: two Argon2id hashes, 19 MiB of memory each.
sign_up "$NIMBUS_PORT"
secret=$(sign_in "$NIMBUS_PORT")
sleep 1
rss_after_signin=$(rss_mib "$main_pid")
say "Nimbus RSS after one sign-up and one sign-in: $rss_after_signin MiB"
say "-- { account { id email } } with Authorization: Bearer <session secret>"
measure account "$main_pid" "$graphql_url" "$ACCOUNT_BODY" "\"email\":\"$EMAIL\"" \
    Authorization "Bearer $secret"
sleep 2
rss_after_account=$(rss_mib "$main_pid")
served=$(operations_served "$NIMBUS_PORT")
say "Nimbus RSS 2 s after all the HTTP load: $rss_after_account MiB, having executed $served operations"

section "(d) $WS_CONNECTIONS idle WebSocket subscribers, on the server that took the HTTP load"
ws_idle "$NIMBUS_PORT" "$main_pid" "$work/ws.out" --fanout
ws=$(grep '^RESULT' "$work/ws.out")
stop "$main_pid"

section "(d') $WS_CONNECTIONS idle WebSocket subscribers, on a fresh server"
start_nimbus fresh "$NIMBUS_PORT"
rss_fresh_start=$(rss_mib "$nimbus_pid")
ws_idle "$NIMBUS_PORT" "$nimbus_pid" "$work/ws-fresh.out"
ws_fresh=$(grep '^RESULT' "$work/ws-fresh.out")
stop "$nimbus_pid"

section "(e) Sign-in throughput: createEmailPasswordSession, server started with --rate-limits false"
start_nimbus signin "$NIMBUS_PORT" --rate-limits false
signin_pid=$nimbus_pid
say "-- Argon2id password checks on one core of this machine (load tool, no server involved)"
measured "$signin_pid" "$work/argon2.out" "$load" argon2 --duration "$ARGON2_DURATION"
argon2=$(grep '^RESULT' "$work/argon2.out")
sign_up "$NIMBUS_PORT"
rss_signin_start=$(rss_mib "$signin_pid")
say "-- load tool: $SIGNIN_CONNECTIONS connections signing in to one account, $DURATION after $WARMUP warm-up"
measured "$signin_pid" "$work/signin.tool" "$load" http --url "$graphql_url" \
    --body "$SIGNIN_BODY" --expect '"secret"' \
    --connections "$SIGNIN_CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP"
signin=$(grep '^RESULT' "$work/signin.tool")
signin_others=$others
signin_cores=$server_cores
sleep 2
rss_signin_after=$(rss_mib "$signin_pid")
rss_signin_peak=$(peak_mib "$signin_pid")
# The project keeps at most maxSessions (10) sessions per user: every sign-in past
# the tenth deleted the oldest.
sessions_left=$(graphql "$NIMBUS_PORT" '{"query":"{ accountSessions { id } }"}' \
    -H "Authorization: Bearer $(sign_in "$NIMBUS_PORT")" | jq '.data.accountSessions | length')
say "sessions the account has afterwards: $sessions_left;" \
    "server RSS $rss_signin_start MiB before, $rss_signin_after MiB after, peak $rss_signin_peak MiB"
stop "$signin_pid"

for name in nimbus fresh signin; do
    if grep -qiE 'panic|ERROR' "$work/$name.err"; then
        section "Nimbus ($name) logged errors (first 20 lines)"
        grep -iE 'panic|ERROR' "$work/$name.err" | head -n 20
    fi
done

section "Summary"
nimbus_tool=${result[nimbus.tool]}
reference_tool=${result[reference.tool]}
has_wrk=${result[reference.wrk_rps]+yes}
goal() { awk -v v="$1" -v limit="$2" -v op="$3" 'BEGIN {
    ok = (op == "ge") ? (v + 0 >= limit + 0) : (v + 0 < limit + 0); print ok ? "MET" : "MISSED" }'; }
tool_ratio=$(ratio "$(field rps "$nimbus_tool")" "$(field rps "$reference_tool")")
printf '%-34s %14s %14s %9s\n' "" "Nimbus" "reference" "ratio"
printf '%-34s %14s %14s %9s\n' "load tool req/s" "$(field rps "$nimbus_tool")" "$(field rps "$reference_tool")" "$tool_ratio"
printf '%-34s %14s %14s\n' "load tool p50 / p99 ms" \
    "$(field p50_ms "$nimbus_tool") / $(field p99_ms "$nimbus_tool")" \
    "$(field p50_ms "$reference_tool") / $(field p99_ms "$reference_tool")"
printf '%-34s %14s %14s\n' "load tool: others' CPU share %" "${result[nimbus.tool_others]}" "${result[reference.tool_others]}"
printf '%-34s %14s %14s\n' "load tool max ms" "$(field max_ms "$nimbus_tool")" "$(field max_ms "$reference_tool")"
printf '%-34s %14s %14s\n' "load tool non-2xx/unexpected/conn" \
    "$(field non_2xx "$nimbus_tool")/$(field unexpected "$nimbus_tool")/$(field io_errors "$nimbus_tool")" \
    "$(field non_2xx "$reference_tool")/$(field unexpected "$reference_tool")/$(field io_errors "$reference_tool")"
if [[ -n $has_wrk ]]; then
    wrk_ratio=$(ratio "${result[nimbus.wrk_rps]}" "${result[reference.wrk_rps]}")
    printf '%-34s %14s %14s %9s\n' "wrk req/s" "${result[nimbus.wrk_rps]}" "${result[reference.wrk_rps]}" "$wrk_ratio"
    printf '%-34s %14s %14s\n' "wrk p50 / p99 ms" \
        "${result[nimbus.wrk_p50]} / ${result[nimbus.wrk_p99]}" \
        "${result[reference.wrk_p50]} / ${result[reference.wrk_p99]}"
    printf '%-34s %14s %14s\n' "wrk: others' CPU share %" "${result[nimbus.wrk_others]}" "${result[reference.wrk_others]}"
    printf '%-34s %14s %14s\n' "wrk non-2xx" "${result[nimbus.wrk_bad]}" "${result[reference.wrk_bad]}"
fi
account_tool=${result[account.tool]}
account_ratio=$(ratio "$(field rps "$account_tool")" "$(field rps "$nimbus_tool")")
printf '\n%-34s %14s %14s %9s\n' "" "account" "__typename" "ratio"
printf '%-34s %14s %14s %9s\n' "load tool req/s" "$(field rps "$account_tool")" "$(field rps "$nimbus_tool")" "$account_ratio"
printf '%-34s %14s %14s\n' "load tool p50 / p99 ms" \
    "$(field p50_ms "$account_tool") / $(field p99_ms "$account_tool")" \
    "$(field p50_ms "$nimbus_tool") / $(field p99_ms "$nimbus_tool")"
printf '%-34s %14s %14s\n' "load tool: others' CPU share %" "${result[account.tool_others]}" "${result[nimbus.tool_others]}"
printf '%-34s %14s %14s\n' "load tool non-2xx/unexpected/conn" \
    "$(field non_2xx "$account_tool")/$(field unexpected "$account_tool")/$(field io_errors "$account_tool")" \
    "$(field non_2xx "$nimbus_tool")/$(field unexpected "$nimbus_tool")/$(field io_errors "$nimbus_tool")"
if [[ -n $has_wrk ]]; then
    account_wrk_ratio=$(ratio "${result[account.wrk_rps]}" "${result[nimbus.wrk_rps]}")
    printf '%-34s %14s %14s %9s\n' "wrk req/s" "${result[account.wrk_rps]}" "${result[nimbus.wrk_rps]}" "$account_wrk_ratio"
    printf '%-34s %14s %14s\n' "wrk p50 / p99 ms" \
        "${result[account.wrk_p50]} / ${result[account.wrk_p99]}" \
        "${result[nimbus.wrk_p50]} / ${result[nimbus.wrk_p99]}"
    printf '%-34s %14s %14s\n' "wrk: others' CPU share %" "${result[account.wrk_others]}" "${result[nimbus.wrk_others]}"
    printf '%-34s %14s %14s\n' "wrk non-2xx" "${result[account.wrk_bad]}" "${result[nimbus.wrk_bad]}"
fi
echo
printf '%-34s %14s\n' "RSS right after start, MiB" "$rss_start"
printf '%-34s %14s\n' "RSS after { __typename } load, MiB" "$rss_after_http"
printf '%-34s %14s\n' "  after 1 sign-up + 1 sign-in, MiB" "$rss_after_signin"
printf '%-34s %14s\n' "  after the account load, MiB" "$rss_after_account"
printf '%-34s %14s\n' "  operations executed by then" "$served"
printf '%-34s %14s\n' "RSS before the subscribers, MiB" "$(field rss_before_mib "$ws")"
printf '%-34s %14s\n' "RSS with $(field connections "$ws") subscribers, MiB" "$(field rss_after_mib "$ws")"
printf '%-34s %14s\n' "  added, MiB (KiB per connection)" "$(field added_mib "$ws") ($(field kib_per_connection "$ws"))"
printf '%-34s %14s\n' "RSS after they closed, MiB" "$(field rss_closed_mib "$ws")"
printf '%-34s %14s\n' "fresh server: RSS before, MiB" "$rss_fresh_start"
printf '%-34s %14s\n' "  with $(field connections "$ws_fresh") subscribers, MiB" "$(field rss_after_mib "$ws_fresh")"
printf '%-34s %14s\n' "  added, MiB (KiB per connection)" "$(field added_mib "$ws_fresh") ($(field kib_per_connection "$ws_fresh"))"
printf '%-34s %14s\n' "fan-out p50 / p99 / max ms" \
    "$(field fanout_p50_ms "$ws") / $(field fanout_p99_ms "$ws") / $(field fanout_max_ms "$ws")"
printf '%-34s %14s\n' "  received / mutation ms" "$(field fanout_received "$ws") / $(field fanout_mutation_ms "$ws")"
argon2_params="m=$(field m_kib "$argon2") KiB, t=$(field t "$argon2"), p=$(field p "$argon2")"
signin_per_core=$(awk -v r="$(field rps "$signin")" -v c="$signin_cores" 'BEGIN { printf "%.1f", (c > 0) ? r / c : 0 }')
echo
printf '%-34s %14s\n' "Argon2id parameters" "$argon2_params"
printf '%-34s %14s\n' "Argon2id checks/s on one core" "$(field per_second "$argon2") ($(field ms_each "$argon2") ms each)"
printf '%-34s %14s\n' "sign-ins/s ($SIGNIN_CONNECTIONS connections)" "$(field rps "$signin")"
printf '%-34s %14s\n' "  p50 / p99 / max ms" \
    "$(field p50_ms "$signin") / $(field p99_ms "$signin") / $(field max_ms "$signin")"
printf '%-34s %14s\n' "  non-2xx/unexpected/conn" \
    "$(field non_2xx "$signin")/$(field unexpected "$signin")/$(field io_errors "$signin")"
printf '%-34s %14s\n' "  server cores busy (of $(nproc))" "$signin_cores"
printf '%-34s %14s\n' "  sign-ins per busy server core/s" "$signin_per_core"
printf '%-34s %14s\n' "  others' CPU share %" "$signin_others"
printf '%-34s %14s\n' "  sessions left (maxSessions 10)" "$sessions_left"
printf '%-34s %14s\n' "  RSS before / after / peak, MiB" "$rss_signin_start / $rss_signin_after / $rss_signin_peak"

section "Goals"
if [[ $noisy == yes ]]; then
    say "WARNING: other work used the CPU during this run; the throughput figures are skewed"
fi
percent() { awk -v a="$1" -v b="$2" 'BEGIN { print (b > 0) ? 100 * a / b : 0 }'; }
say "{ __typename } >= 50% of the reference's req/s (load tool): $tool_ratio" \
    "$(goal "$(percent "$(field rps "$nimbus_tool")" "$(field rps "$reference_tool")")" 50 ge)"
if [[ -n $has_wrk ]]; then
    say "{ __typename } >= 50% of the reference's req/s (wrk):       $wrk_ratio" \
        "$(goal "$(percent "${result[nimbus.wrk_rps]}" "${result[reference.wrk_rps]}")" 50 ge)"
fi
say "signed-in { account { id email } } >= 80% of { __typename } (load tool): $account_ratio" \
    "$(goal "$(percent "$(field rps "$account_tool")" "$(field rps "$nimbus_tool")")" 80 ge)"
if [[ -n $has_wrk ]]; then
    say "signed-in { account { id email } } >= 80% of { __typename } (wrk):       $account_wrk_ratio" \
        "$(goal "$(percent "${result[account.wrk_rps]}" "${result[nimbus.wrk_rps]}")" 80 ge)"
fi
say "idle server memory < 50 MiB (after start):        $rss_start MiB  $(goal "$rss_start" 50 lt)"
say "idle server memory < 50 MiB (after HTTP load):    $rss_after_account MiB  $(goal "$rss_after_account" 50 lt)"
# `ws_goal LABEL RESULT`: the subscribers' goal on the server's whole RSS.
ws_goal() {
    local total
    total=$(field rss_after_mib "$2")
    if [[ $(field connections "$2") == "$WS_CONNECTIONS" ]]; then
        say "$WS_CONNECTIONS idle subscribers < 200 MiB ($1): $total MiB  $(goal "$total" 200 lt)"
    else
        say "$WS_CONNECTIONS idle subscribers < 200 MiB ($1): only $(field connections "$2") opened  MISSED"
    fi
}
ws_goal "after the HTTP load" "$ws"
ws_goal "fresh server" "$ws_fresh"
say "sign-in: $(field rps "$signin") sign-ins/s with $SIGNIN_CONNECTIONS connections on $(nproc) cores;" \
    "Argon2id ($argon2_params) $(field per_second "$argon2") checks/s per core (no goal set)"
