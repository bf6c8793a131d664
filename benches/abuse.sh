#!/usr/bin/env bash
# One hostile client against one Nimbus replica, on loopback only: does a legitimate
# client still get served? The legitimate client is benches/databases.sh's by-id read
# (wrk, one signed-in user, the same 10,000 posts and request) from 127.0.0.1; the
# attacker is benches/abuse/attack.py (Python, asyncio, standard library), every
# socket bound to ATTACKER (127.0.0.2), so per-client caps see another client. The
# server is a release build of `nimbus serve` on SQLite, with its default settings.
# In turn, each for PHASE_SECONDS while wrk measures:
#   quiet       the legitimate client alone (before the attacks; and `after` them)
#   bombs       GraphQL documents small to send and big to work on, in a loop from
#               BOMB_CONNECTIONS connections: 30 nested fragments each spreading the
#               next twice, 10,000 aliases, 20,000 copies of `__typename`, 4,000
#               copies of `post(id: "p1") { id title }`
#   slowloris   SLOWLORIS connections each sending half a request head, then
#               nothing (reopened when the server closes one)
#   websockets  IDLE_WEBSOCKETS WebSockets, connected and initialised
#               (graphql-transport-ws connection_ack), then idle
#   uploads     anonymous multipart `createFile` requests of UPLOAD_MIB MiB (the
#               default upload limit) into a bucket the anonymous may only read, one
#               after another on UPLOAD_CONNECTIONS connections
#   previews    PREVIEWS concurrent previews, one after another on each connection,
#               of a PREVIEW_SIZE PNG of noise (15 MiB; uploaded first with the admin
#               key into that public-read bucket), each at a width not asked before
#               (never from the cache)
#   presence    PRESENCE_SOCKETS WebSockets, each holding PRESENCE_EACH `presence`
#               subscriptions on one channel (each announced to everyone there) and
#               replacing its oldest every PRESENCE_CHURN_MS (a LEAVE and a JOIN)
# For each: the legitimate client's req/s, p50 and p99 (wrk --latency), its errors
# (non-2xx, unexpected bodies and socket errors, wrk's 2 s timeout included), the
# server's peak RSS over the phase (VmHWM, reset at the start of the phase through
# /proc/PID/clear_refs, and VmRSS sampled every 100 ms), the CPU used by the server,
# the attacker, wrk and anything else, the connections the server held once the
# attack was in place (from /metrics), and what the attacker got. Goal, per phase:
# p99 under P99_FACTOR (2) × the quiet p99, no error, peak RSS under RSS_GOAL_MIB
# (256). Prints the machine, every figure, the verdicts and a Markdown block for
# benches/RESULTS.md.
#
# Usage: benches/abuse.sh        (from anywhere; builds the release binary first,
#                                 honouring CARGO_TARGET_DIR; 2½ minutes after it on a
#                                 quiet machine, up to 4½ when it waits for one)
# Knobs (environment):
#   PHASES="bombs slowloris websockets uploads previews presence"   (any subset, any order)
#   PHASE_SECONDS=15 WARMUP=3s CONNECTIONS=32 TIMEOUT=2s ROWS=10000 QUIET_WAIT=10
#   ATTACKER=127.0.0.2           the attacker's address (any in 127.0.0.0/8 but 127.0.0.1)
#   BOMB_CONNECTIONS=8 SLOWLORIS=300 IDLE_WEBSOCKETS=1000 UPLOAD_CONNECTIONS=4 UPLOAD_MIB=64
#   PREVIEWS=16 PREVIEW_SIZE=2560x2048 PRESENCE_SOCKETS=200 PRESENCE_EACH=20
#   PRESENCE_CHURN_MS=100
#   P99_FACTOR=2 RSS_GOAL_MIB=256
#   NIMBUS_BIN=path              use this binary instead of building one
# The attacker shares the two cores with the server and wrk, as a real one on another
# machine would not: its CPU share is printed beside every phase, and a phase in which
# something else used more than 10% of the machine is marked as disturbed. Before each
# phase the script waits up to QUIET_WAIT seconds for the machine (and so the server,
# still finishing the last phase's work) to be idle, and says so when it was not.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
here=$root/benches/abuse
# The seeding imports nothing, but keep the source tree free of __pycache__ anyway.
export PYTHONDONTWRITEBYTECODE=1

PHASES=${PHASES:-bombs slowloris websockets uploads previews presence}
PHASE_SECONDS=${PHASE_SECONDS:-15}
WARMUP=${WARMUP:-3s}
CONNECTIONS=${CONNECTIONS:-32}
TIMEOUT=${TIMEOUT:-2s}
ROWS=${ROWS:-10000}
QUIET_WAIT=${QUIET_WAIT:-10}
ATTACKER=${ATTACKER:-127.0.0.2}
BOMB_CONNECTIONS=${BOMB_CONNECTIONS:-8}
SLOWLORIS=${SLOWLORIS:-300}
IDLE_WEBSOCKETS=${IDLE_WEBSOCKETS:-1000}
UPLOAD_CONNECTIONS=${UPLOAD_CONNECTIONS:-4}
UPLOAD_MIB=${UPLOAD_MIB:-64}
PREVIEWS=${PREVIEWS:-16}
PREVIEW_SIZE=${PREVIEW_SIZE:-2560x2048}
PRESENCE_SOCKETS=${PRESENCE_SOCKETS:-200}
PRESENCE_EACH=${PRESENCE_EACH:-20}
PRESENCE_CHURN_MS=${PRESENCE_CHURN_MS:-100}
P99_FACTOR=${P99_FACTOR:-2}
RSS_GOAL_MIB=${RSS_GOAL_MIB:-256}
EMAIL=bench@example.com
PASSWORD='bench password 1234'

# shellcheck source=benches/lib.sh
source benches/lib.sh

command -v wrk >/dev/null || die "wrk is needed (apt-get install wrk)"
for tool in jq curl python3; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done
[[ $ATTACKER == 127.* && $ATTACKER != 127.0.0.1 ]] ||
    die "ATTACKER must be a loopback address other than 127.0.0.1, not '$ATTACKER'"
python3 -c 'import socket, sys; socket.socket().bind((sys.argv[1], 0))' "$ATTACKER" 2>/dev/null ||
    die "cannot bind a socket to $ATTACKER"
for phase in $PHASES; do
    case $phase in
    bombs | slowloris | websockets | uploads | previews | presence) ;;
    *) die "unknown phase '$phase' in PHASES" ;;
    esac
done

# The work directory holds the data directory and the server's temporary files
# (multipart uploads are spooled there): all of it goes at the end.
open_workspace abuse-bench
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# 1,000 WebSockets are as many file descriptors in the attacker and in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < IDLE_WEBSOCKETS + SLOWLORIS + 500)); then
    die "ulimit -n is $(ulimit -n); $IDLE_WEBSOCKETS WebSockets need more"
fi

section "Machine"
date_utc=$(date -u '+%Y-%m-%d %H:%M UTC')
describe_machine
say "date:     $date_utc"
say "commit:   $commit"
say "cpu:      $machine"
say "memory:   $memory"
say "kernel:   $(uname -sr)"
say "wrk:      $(wrk -v 2>&1 | head -n 1 || true)"
say "python:   $(python3 --version)"
say "phases:   quiet $PHASES after, ${PHASE_SECONDS} s each; attacker from $ATTACKER"

nimbus_binary "$work"
say "rustc:    $(rustc --version 2>/dev/null || echo unknown)"

section "Nimbus on SQLite: start and seed"
free_port && port=$REPLY
url="http://127.0.0.1:$port"
mkdir -p "$work/tmp"
env -u NIMBUS_DATABASE_URL -u NIMBUS_REDIS_URL -u NIMBUS_SECRET -u NIMBUS_DATA_DIR -u NIMBUS_LISTEN -u NIMBUS_STORAGE \
    TMPDIR="$work/tmp" "$work/nimbus" serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
    >"$work/nimbus.out" 2>"$work/nimbus.err" &
nimbus_pid=$!
started_pids+=("$nimbus_pid")
wait_for_port "$port" "$nimbus_pid" "$work/nimbus.err"
admin_key_from "$work/nimbus.out"
say "nimbus serve on 127.0.0.1:$port (pid $nimbus_pid), default settings; RSS $(rss_mib "$nimbus_pid") MiB"

say "seeding $ROWS posts through GraphQL (benches/databases/seed.py)"
seeded=$(python3 "$root/benches/databases/seed.py" nimbus "$url" "$admin_key" "$EMAIL" "$PASSWORD" "$ROWS")
secret=$(sed -n 's/.*secret=\([^ ]*\).*/\1/p' <<<"$seeded")
[[ -n $secret ]] || die "the seeding printed no session: $seeded"
say "seeded in $(sed -n 's/.*seed_seconds=\([^ ]*\).*/\1/p' <<<"$seeded") s; signed in as $EMAIL"

gql() { # QUERY VARIABLES_JSON: the answer's data, with the admin key; dies on errors
    local answer
    answer=$(jq -n --arg q "$1" --argjson v "$2" '{query: $q, variables: $v}' |
        curl -sS "$url/v1/graphql" -H "X-Nimbus-Key: $admin_key" -H 'Content-Type: application/json' \
            --data-binary @-) || die "GraphQL request failed: $1"
    jq -e '.errors == null' >/dev/null <<<"$answer" || die "GraphQL errors: $answer"
    jq -c .data <<<"$answer"
}
# The anonymous may read this bucket's files, and create none.
gql 'mutation($i: CreateBucketInput!) { createBucket(input: $i) { id } }' \
    "{\"i\": {\"id\": \"public\", \"name\": \"Public\", \"encryption\": false, \"antivirus\": false, \"maximumFileSize\": $((64 * 1024 * 1024)), \"permissions\": [\"read(\\\"any\\\")\"]}}" >/dev/null
python3 - "$work/big.png" "$PREVIEW_SIZE" <<'EOF'
# A PNG of random RGB pixels: it does not compress, so its size is its pixels'.
import os, struct, sys, zlib

path, size = sys.argv[1], sys.argv[2]
width, height = (int(n) for n in size.split("x"))


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


rows = b"".join(b"\0" + os.urandom(width * 3) for _ in range(height))
with open(path, "wb") as out:
    out.write(b"\x89PNG\r\n\x1a\n")
    out.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
    out.write(chunk(b"IDAT", zlib.compress(rows, 1)))
    out.write(chunk(b"IEND", b""))
EOF
png_mib=$(awk -v b="$(stat -c %s "$work/big.png")" 'BEGIN { printf "%.1f", b / 1048576 }')
answer=$(curl -sS "$url/v1/graphql" -H "X-Nimbus-Key: $admin_key" -H 'Apollo-Require-Preflight: true' \
    -F 'operations={"query": "mutation($i: CreateFileInput!) { createFile(input: $i) { mimeType size } }", "variables": {"i": {"bucketId": "public", "fileId": "photo", "file": null}}}' \
    -F 'map={"0": ["variables.i.file"]}' -F "0=@$work/big.png;filename=photo.png")
[[ $(jq -r .data.createFile.mimeType <<<"$answer") == image/png ]] || die "the PNG's upload failed: $answer"
preview_path=/v1/storage/buckets/public/files/photo/preview
status=$(curl -sS -o "$work/preview.png" -w '%{http_code}' "$url$preview_path?width=32")
[[ $status == 200 ]] || die "an anonymous preview answered $status: $(head -c 300 "$work/preview.png")"
say "uploaded a $PREVIEW_SIZE PNG of noise ($png_mib MiB) to bucket \`public\` (read(\"any\")); anonymous previews work"
say "server RSS after the set-up: $(rss_mib "$nimbus_pid") MiB"

# The legitimate client: databases.sh's by-id read, as the signed-in user.
legit() { # DURATION [WRK_OPTION...]
    local duration=$1
    shift
    BENCH_METHOD=POST BENCH_PATH=/v1/graphql \
        BENCH_BODY='{"query":"query($id: ID!){ post(id: $id) { id title body views published } }","variables":{"id":"@ID@"}}' \
        BENCH_EXPECT='"title":"Post ' BENCH_ID_FORMAT='p%d' BENCH_ID_COUNT=$ROWS \
        BENCH_AUTH="Bearer $secret" BENCH_TAG=abuse \
        wrk -t1 -c"$CONNECTIONS" -d"$duration" --timeout "$TIMEOUT" "$@" \
        -s "$root/benches/databases/wrk.lua" "$url"
}
say "warm-up: $WARMUP of the legitimate client"
legit "$WARMUP" >"$work/warmup.wrk" 2>&1 || { cat "$work/warmup.wrk"; die "the warm-up failed"; }
grep -q '^BAD 0$' "$work/warmup.wrk" || { cat "$work/warmup.wrk"; die "the warm-up had bad responses"; }

# wrk prints latencies as 512.00us, 1.23ms or 1.01s; this gives milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.2f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.2f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.2f", v * 1000 }
        else print "n/a" }'
}
# CPU ticks of one process (all its threads, and children it has waited for); 0 once gone.
ticks_of() {
    awk '{ sub(/^[0-9]+ \(.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
kib_of() { # PID FIELD: a /proc/PID/status figure in KiB
    awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}
# `rss_sampler PID OUT`: the highest VmRSS of PID, in KiB, kept in OUT, every 100 ms.
rss_sampler() {
    local pid=$1 out=$2 peak=0 key value
    while [[ -r /proc/$pid/status ]]; do
        while read -r key value _; do
            if [[ $key == VmRSS: ]]; then
                ((value <= peak)) || peak=$value
                break
            fi
        done <"/proc/$pid/status"
        printf '%s\n' "$peak" >"$out"
        sleep 0.1
    done
}
# `metric NAME`: a gauge or counter summed over its labels, from the server's /metrics
# (a label filter may follow the name: `metric 'nimbus_http_connections_refused_total{cap="client"'`).
metrics_now() { curl -sS -m 5 "$url/metrics" >"$work/metrics" 2>/dev/null || : >"$work/metrics"; }
metric() {
    awk -v name="$1" 'index($0, name) == 1 && (substr($0, length(name) + 1, 1) ~ /[ {]/ || name ~ /\{/) { n += $NF }
        END { printf "%.0f", n }' "$work/metrics"
}

hz=$(getconf CLK_TCK)
declare -A res=()
noisy=()
server_died=
# `run_phase NAME [ATTACK_OPTION...]`: the legitimate client for PHASE_SECONDS, with
# the attacker's NAME phase in place when NAME is an attack; figures into res[NAME.*].
run_phase() {
    local name=$1 attacker_pid= sampler_pid out=$work/$1.wrk tries
    local busy0 all0 busy1 all1 server0 server1 attacker0 attacker1 wrk0 wall0 wall refused0
    shift
    section "$name"
    wait_for_quiet || noisy+=("$name (${REPLY}% busy before)")
    metrics_now
    refused0=$(metric 'nimbus_http_connections_refused_total{cap="client"')
    echo 5 >"/proc/$nimbus_pid/clear_refs" 2>/dev/null || true
    res[$name.rss_start]=$(rss_mib "$nimbus_pid")
    rss_sampler "$nimbus_pid" "$work/$name.rss" &
    sampler_pid=$!
    if (($#)); then
        python3 "$here/attack.py" "$name" --url "$url" --source "$ATTACKER" \
            --duration $((PHASE_SECONDS + 1)) "$@" >"$work/$name.attack" 2>&1 &
        attacker_pid=$!
        started_pids+=("$attacker_pid")
        for ((tries = 0; tries < 300; tries++)); do
            grep -q '^READY' "$work/$name.attack" && break
            kill -0 "$attacker_pid" 2>/dev/null || { cat "$work/$name.attack"; die "the attacker exited early"; }
            sleep 0.1
        done
        say "attacker: $(grep '^READY' "$work/$name.attack" || echo 'not ready after 30 s, measuring anyway')"
        # What the server holds halfway through the measurement.
        (
            sleep "$(awk -v s="$PHASE_SECONDS" 'BEGIN { print s / 2 }')"
            curl -sS -m 5 "$url/metrics" >"$work/$name.metrics" 2>/dev/null || true
        ) &
        started_pids+=($!)
    fi
    read -r busy0 all0 < <(machine_ticks)
    server0=$(ticks_of "$nimbus_pid")
    attacker0=0
    [[ -z $attacker_pid ]] || attacker0=$(ticks_of "$attacker_pid")
    children_seconds
    wrk0=$children
    wall0=$(date +%s%N)
    say "-- wrk -t1 -c$CONNECTIONS -d${PHASE_SECONDS}s --timeout $TIMEOUT --latency (by id, signed in, from 127.0.0.1)"
    legit "${PHASE_SECONDS}s" --latency >"$out" 2>&1 || { cat "$out"; die "wrk failed"; }
    wall=$(($(date +%s%N) - wall0))
    read -r busy1 all1 < <(machine_ticks)
    server1=$(ticks_of "$nimbus_pid")
    attacker1=0
    [[ -z $attacker_pid ]] || attacker1=$(ticks_of "$attacker_pid")
    children_seconds
    read -r res[$name.server_cores] res[$name.attacker_cores] res[$name.wrk_cores] res[$name.others] < <(awk \
        -v server=$((server1 - server0)) -v attacker=$((attacker1 - attacker0)) \
        -v wrk="$(awk -v a="$children" -v b="$wrk0" 'BEGIN { print a - b }')" \
        -v busy=$((busy1 - busy0)) -v all=$((all1 - all0)) -v ns="$wall" -v hz="$hz" 'BEGIN {
            w = ns / 1e9; o = busy - server - attacker - wrk * hz; if (o < 0) o = 0
            printf "%.2f %.2f %.2f %.0f\n", server / hz / w, attacker / hz / w, wrk / w, (all > 0) ? 100 * o / all : 0 }')
    if [[ -n $attacker_pid ]]; then
        # It stops by itself a second after wrk; a minute more is a hang.
        for ((tries = 0; tries < 600; tries++)); do
            kill -0 "$attacker_pid" 2>/dev/null || break
            sleep 0.1
        done
        stop "$attacker_pid"
        if ! res[$name.attack]=$(grep '^RESULT' "$work/$name.attack"); then
            res[$name.attack]="RESULT none"
            say "!!! the attacker reported nothing; its last words:"
            tail -n 20 "$work/$name.attack"
        fi
        cp "$work/$name.metrics" "$work/metrics" 2>/dev/null || : >"$work/metrics"
        res[$name.held]=$(metric nimbus_http_connections)
        res[$name.held_ws]=$(metric nimbus_websocket_connections)
        res[$name.held_subs]=$(metric nimbus_subscriptions_active)
    fi
    kill "$sampler_pid" 2>/dev/null || true
    wait "$sampler_pid" 2>/dev/null || true
    if ! kill -0 "$nimbus_pid" 2>/dev/null; then
        server_died=$name
        say "!!! the server exited during $name; its last words:"
        tail -n 20 "$work/nimbus.err"
        res[$name.peak]=n/a
    else
        res[$name.peak]=$(awk -v a="$(kib_of "$nimbus_pid" VmHWM)" -v b="$(cat "$work/$name.rss" 2>/dev/null || echo 0)" \
            'BEGIN { printf "%.1f", ((a > b) ? a : b) / 1024 }')
        res[$name.rss_after]=$(rss_mib "$nimbus_pid")
        metrics_now
        res[$name.refused]=$(($(metric 'nimbus_http_connections_refused_total{cap="client"') - refused0))
    fi
    res[$name.rps]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    res[$name.p50]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    res[$name.p99]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    res[$name.max]=$(to_ms "$(awk '$1 == "Latency" { print $4 }' "$out")")
    res[$name.socket]=$(awk '/Socket errors/ { gsub(/,/, ""); n = $4 + $6 + $8 + $10 } END { print n + 0 }' "$out")
    res[$name.bad]=$(awk '/^BAD/ { n = $2 } END { print n + 0 }' "$out")
    res[$name.errors]=$((res[$name.bad] + res[$name.socket]))
    grep -E 'Requests/sec|requests in|Non-2xx|Socket errors|^BAD|^FIRST_BAD|^ +(50|99)%' "$out" | sed 's/^/   /'
    say "   server RSS ${res[$name.rss_start]} MiB at the start, peak ${res[$name.peak]} MiB, ${res[$name.rss_after]:-n/a} MiB after;" \
        "CPU: server ${res[$name.server_cores]}, attacker ${res[$name.attacker_cores]}," \
        "wrk ${res[$name.wrk_cores]} cores; others ${res[$name.others]}% of the machine"
    ((${res[$name.others]} <= 10)) || noisy+=("$name (others used ${res[$name.others]}% during it)")
    [[ -z $attacker_pid ]] || say "   attacker: ${res[$name.attack]#RESULT }"
}

# The quiet figure is every phase's yardstick: measured again (up to 3 times) when
# other work disturbed it.
ran=(quiet)
for attempt in 1 2 3; do
    noisy=()
    run_phase quiet
    ((${res[quiet.others]} > 10 && attempt < 3)) || break
    say "DISTURBED: other work used ${res[quiet.others]}% of the machine; the quiet client again"
done
for phase in $PHASES; do
    [[ -z $server_died ]] || break
    ran+=("$phase")
    case $phase in
    bombs) run_phase bombs --connections "$BOMB_CONNECTIONS" ;;
    slowloris) run_phase slowloris --connections "$SLOWLORIS" ;;
    websockets) run_phase websockets --connections "$IDLE_WEBSOCKETS" ;;
    uploads) run_phase uploads --connections "$UPLOAD_CONNECTIONS" --upload-mib "$UPLOAD_MIB" --bucket public ;;
    previews) run_phase previews --connections "$PREVIEWS" --file "$preview_path" ;;
    presence)
        run_phase presence --connections "$PRESENCE_SOCKETS" --presences "$PRESENCE_EACH" \
            --churn-ms "$PRESENCE_CHURN_MS"
        ;;
    esac
done
if [[ -z $server_died ]]; then
    ran+=(after)
    run_phase after
fi

logged=
if grep -qiE 'panic|ERROR' "$work/nimbus.err"; then
    logged=$(grep -iE 'panic|ERROR' "$work/nimbus.err" | sed -E 's/^[^ ]+ +//; s/[0-9a-f]{8,}/…/g' |
        cut -c1-160 | sort | uniq -c | sort -rn | head -n 5)
    section "Nimbus logged errors (the most frequent)"
    say "$logged"
fi

section "Summary"
quiet_p99=${res[quiet.p99]}
limit=$(awk -v p="$quiet_p99" -v f="$P99_FACTOR" 'BEGIN { printf "%.2f", p * f }')
fmt_int() { # 12345 -> 12,345
    awk -v n="$1" 'BEGIN { if (n !~ /^[0-9]+$/) { printf "%s", n; exit }
        s = ""; while (length(n) > 3) { s = "," substr(n, length(n) - 2) s; n = substr(n, 1, length(n) - 3) }
        printf "%s%s", n, s }'
}
# `verdict NAME`: MET, or MISSED with what missed.
verdict() {
    local name=$1 missed=()
    awk -v p="${res[$name.p99]}" -v l="$limit" 'BEGIN { exit !(p + 0 < l + 0) }' ||
        missed+=("p99 $(awk -v p="${res[$name.p99]}" -v q="$quiet_p99" 'BEGIN { printf "%.1f", p / q }')× quiet")
    ((${res[$name.errors]} == 0)) || missed+=("$(fmt_int "${res[$name.errors]}") errors")
    awk -v r="${res[$name.peak]}" -v g="$RSS_GOAL_MIB" 'BEGIN { exit !(r != "n/a" && r + 0 < g + 0) }' ||
        missed+=("RSS ${res[$name.peak]} MiB")
    [[ $server_died != "$name" ]] || missed+=("server exited")
    if ((${#missed[@]})); then
        local joined
        joined=$(printf '%s; ' "${missed[@]}")
        printf 'MISSED (%s)' "${joined%; }"
    else
        printf 'MET'
    fi
    # Figures taken while something else used the machine are skewed, mostly for the worse.
    ((${res[$name.others]} <= 10)) || printf ', disturbed (others %s%%)' "${res[$name.others]}"
}
describe() {
    case $1 in
    quiet) printf 'none (before the attacks)' ;;
    after) printf 'none (after the attacks)' ;;
    bombs) printf 'fragment, alias and duplicate-field bombs, %s connections' "$BOMB_CONNECTIONS" ;;
    slowloris) printf '%s half-sent request heads' "$SLOWLORIS" ;;
    websockets) printf '%s idle WebSockets' "$(fmt_int "$IDLE_WEBSOCKETS")" ;;
    uploads) printf 'anonymous %s MiB uploads, %s connections' "$UPLOAD_MIB" "$UPLOAD_CONNECTIONS" ;;
    previews) printf '%s concurrent previews of a %s MiB PNG' "$PREVIEWS" "$png_mib" ;;
    presence) printf '%s sockets × %s presences, churn every %s ms' "$PRESENCE_SOCKETS" "$PRESENCE_EACH" "$PRESENCE_CHURN_MS" ;;
    esac
}
# `val NAME LINE`: a field of a RESULT line, 0 when it is not there (nothing counted).
val() {
    local v
    v=$(field "$1" "$2")
    printf '%s' "${v:-0}"
}
# What the attacker got, in words, from its RESULT line.
got() {
    local line=${res[$1.attack]:-} outcomes
    outcomes=$(field outcomes "$line" | sed 's/\*/ ×/g; s/,/, /g; s/:-//g')
    case $1 in
    bombs)
        printf '%s requests answered (p50 %s ms: fragments %s, aliases %s, duplicates %s, arguments %s; slowest %s ms): %s' \
            "$(fmt_int "$(val requests "$line")")" "$(val answer_p50_ms "$line")" "$(val p50_ms_fragments "$line")" \
            "$(val p50_ms_aliases "$line")" "$(val p50_ms_duplicates "$line")" "$(val p50_ms_arguments "$line")" \
            "$(val answer_max_ms "$line")" "$outcomes"
        ;;
    previews)
        printf '%s requests answered (p50 %s ms, slowest %s ms): %s' "$(fmt_int "$(val requests "$line")")" \
            "$(val answer_p50_ms "$line")" "$(val answer_max_ms "$line")" "$outcomes"
        ;;
    slowloris)
        printf '%s opened, at most %s open at once, %s at the end; ended by the server: %s (held p50 %s ms, longest %s ms)' \
            "$(fmt_int "$(val opened "$line")")" "$(val open_peak "$line")" "$(val open_at_end "$line")" \
            "$outcomes" "$(val answer_p50_ms "$line")" "$(val answer_max_ms "$line")"
        ;;
    websockets)
        printf 'at most %s open at once, %s at the end; handshakes: %s' \
            "$(val open_peak "$line")" "$(val open_at_end "$line")" "$outcomes"
        ;;
    uploads)
        printf '%s uploads, %s MiB sent (%s answered before the whole body was sent; p50 %s ms): %s' \
            "$(val requests "$line")" "$(fmt_int "$(val sent_mib "$line")")" \
            "$(val answered_before_body_sent "$line")" "$(val answer_p50_ms "$line")" "$outcomes"
        ;;
    presence)
        printf '%s presence subscriptions sent, %s events received (%s MiB), %s errors, %s sockets closed; handshakes: %s' \
            "$(fmt_int "$(val joins_sent "$line")")" "$(fmt_int "$(val next "$line")")" \
            "$(awk -v b="$(val received_bytes "$line")" 'BEGIN { printf "%.0f", b / 1048576 }')" \
            "$(fmt_int "$(val error "$line")")" "$(val closed "$line")" "$outcomes"
        ;;
    *) printf '-' ;;
    esac
}

printf '%-11s %8s %8s %9s %7s %7s %15s %14s  %s\n' phase 'req/s' 'p50 ms' 'p99 ms' 'p99 ×' errors 'RSS→peak MiB' 'srv/atk/wrk' 'goal'
for name in "${ran[@]}"; do
    printf '%-11s %8s %8s %9s %7s %7s %15s %14s  %s\n' "$name" "$(fmt_int "${res[$name.rps]}")" "${res[$name.p50]}" \
        "${res[$name.p99]}" "$(awk -v p="${res[$name.p99]}" -v q="$quiet_p99" 'BEGIN { printf "%.2f", p / q }')" \
        "${res[$name.errors]}" "${res[$name.rss_start]}→${res[$name.peak]}" \
        "${res[$name.server_cores]}/${res[$name.attacker_cores]}/${res[$name.wrk_cores]}" "$(verdict "$name")"
done
echo
for name in "${ran[@]}"; do
    [[ -n ${res[$name.attack]:-} ]] || continue
    say "$name: $(got "$name")"
    say "   server: ${res[$name.held]} connections open halfway through (${res[$name.held_ws]} WebSockets," \
        "${res[$name.held_subs]} subscriptions); ${res[$name.refused]:-n/a} refused at the per-client cap over the phase"
done
((${#noisy[@]} == 0)) || say "WARNING: other work used the machine during: ${noisy[*]}"

section "Markdown for benches/RESULTS.md"
cat <<EOF
Run on $date_utc at commit \`$commit\`: $machine, $memory, $(uname -sr); wrk $(wrk -v 2>&1 | awk 'NR == 1 { print $2 }'), $(python3 --version).

Conditions: \`nimbus serve\` (release build) on SQLite with its default settings, seeded with benches/databases.sh's $(fmt_int "$ROWS") posts. The legitimate client: wrk -t1 -c$CONNECTIONS --timeout $TIMEOUT from 127.0.0.1, the by-id read of benches/databases.sh as a signed-in user, ${PHASE_SECONDS} s per phase. The attacker: \`benches/abuse/attack.py\` (Python asyncio) from $ATTACKER, on the same two cores, in place before wrk starts and until it ends. One server serves all the phases in turn, as a replica lives through one attack after another: what a phase leaves allocated is its next phase's start. RSS: at the start of the phase, and its peak (the server's VmHWM over the phase, reset at its start, or the highest VmRSS sampled every 100 ms). Errors: non-2xx, unexpected bodies and socket errors (a request over ${TIMEOUT} included). CPU in cores: server / attacker / wrk. Goal per phase: p99 under ${P99_FACTOR}× the quiet p99 (${quiet_p99} ms, so under ${limit} ms), no error for the legitimate client, server RSS under ${RSS_GOAL_MIB} MiB.

| phase | attack (from $ATTACKER) | req/s | p50 ms | **p99 ms** | p99 / quiet | errors | RSS at start → **peak** MiB | CPU srv / atk / wrk | others | goal |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |
EOF
for name in "${ran[@]}"; do
    printf '| %s | %s | %s | %s | **%s** | %s× | %s | %s → **%s** | %s / %s / %s | %s%% | %s |\n' "$name" "$(describe "$name")" \
        "$(fmt_int "${res[$name.rps]}")" "${res[$name.p50]}" "${res[$name.p99]}" \
        "$(awk -v p="${res[$name.p99]}" -v q="$quiet_p99" 'BEGIN { printf "%.2f", p / q }')" \
        "$(fmt_int "${res[$name.errors]}")" "${res[$name.rss_start]}" "${res[$name.peak]}" \
        "${res[$name.server_cores]}" "${res[$name.attacker_cores]}" "${res[$name.wrk_cores]}" "${res[$name.others]}" \
        "$(verdict "$name")"
done
echo
echo "| phase | what the attacker got | server connections halfway through (WebSockets, subscriptions) | refused at the per-client cap |"
echo "| --- | --- | ---: | ---: |"
for name in "${ran[@]}"; do
    [[ -n ${res[$name.attack]:-} ]] || continue
    printf '| %s | %s | %s (%s, %s) | %s |\n' "$name" "$(got "$name")" "${res[$name.held]}" "${res[$name.held_ws]}" \
        "${res[$name.held_subs]}" "$(fmt_int "${res[$name.refused]:-n/a}")"
done
((${#noisy[@]} == 0)) || printf '\nOther work used the machine during: %s.\n' "${noisy[*]}"
if [[ -n $server_died ]]; then
    printf '\nThe server exited during %s: the phases after it did not run.\n' "$server_died"
fi
