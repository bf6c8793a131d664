#!/usr/bin/env bash
# Instructions per request, counted by callgrind: a figure that repeats on a busy
# machine, where requests per second do not. Each BINARY in turn serves WORKLOAD
# under `valgrind --tool=callgrind` (a fresh data directory, or a fresh MariaDB
# database, each); the counters are zeroed once the server is up and seeded, wrk
# sends the workload for DURATION, the profile is dumped, and the total of
# instructions (Ir, every thread of the server) is divided by the answers wrk got.
# The database server's own instructions are not counted.
#
#   typename   {"query":"{ __typename }"}
#   caller     { locale { countryCode } }, X-Forwarded-For: 8.8.8.8 (a GeoIP lookup)
#   countries  { locale { countries { code name } } }, X-Nimbus-Locale: de
#   create     createPost as a signed-in user, as benches/databases.sh's `create`
#   function   GET /v1/functions/hello-quiet: a hello-world HTTP function, warm,
#              `logging: false` (as benches/functions.sh sets it up)
#   function-fresh  GET /v1/functions/hello: a hello world in a fresh context per
#              execution, with a record of each (the defaults)
#   function-read  GET /v1/functions/reader-quiet/p1: the same, reading one
#              document through `nimbus.graphql`
#   read       the same read over POST /v1/graphql, its id a variable, with the
#              admin key (as a typed client sends its operations)
#
# Callgrind runs a server's threads one at a time, about 50 times slower: a create
# batch (SQLite's group commit, MariaDB's shared insert) holds fewer members than
# at full speed, so compare binaries within one run, not with wrk's figures.
#
# Usage: benches/instructions.sh WORKLOAD BINARY...
#   A BINARY written `VAR=value:path` runs with that variable set, e.g.
#   `NIMBUS_USAGE=off:target/release/nimbus` (one binary, usage on and off);
#   several are separated by commas (`A=1,B=2:path`).
# Knobs (environment): DURATION=30s CONNECTIONS=32 DATABASE=sqlite|mariadb
#   KEEP=dir   keep each profile there (callgrind_annotate KEEP/N.callgrind, N the
#              binary's place on the command line, from 1; with THREADS=1, one
#              file per thread, KEEP/N.callgrind-TT)
#   COUNT=database  (with DATABASE=mariadb) count MariaDB's instructions instead:
#              mariadbd runs under callgrind (one server for every binary, a fresh
#              database each), the binaries natively; the same wrk run. Per
#              answer: the instructions of the server's connection threads (the
#              statements), of its background threads apart (flushing, purge:
#              they run by the clock as well as by the work, and vary more), and
#              the creates a shared insert held on average (read from the
#              binary's /metrics), which the per-create figures depend on
#   SQL='…'    (with DATABASE=mariadb) statements run in each binary's database
#              once it is seeded, before the warm-up: what-if measurements of the
#              schema (an index dropped, a column's type changed)
#   THREADS=1  count each thread apart (callgrind's --separate-threads): besides
#              the total, the instructions per request of the threads running
#              SQLite's statements (sqlx's worker threads, one per connection:
#              the writer's among them) and of the rest
# Needs valgrind, wrk, curl, jq and python3; DATABASE=mariadb needs MariaDB's server.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=benches/lib.sh
source "$root/benches/lib.sh"

(($# >= 2)) || die "usage: benches/instructions.sh typename|caller|countries|create|function|function-fresh|function-read|read BINARY..."
workload=$1
shift
DURATION=${DURATION:-30s}
CONNECTIONS=${CONNECTIONS:-32}
DATABASE=${DATABASE:-sqlite}
COUNT=${COUNT:-nimbus}
[[ $COUNT == nimbus || ($COUNT == database && $DATABASE == mariadb) ]] ||
    die "COUNT=database needs DATABASE=mariadb"
for tool in valgrind callgrind_control wrk curl jq python3; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-instructions.XXXXXX")
started_pids=()
taken_ports=()
mariadb_pid=
waited=0
cleanup() {
    local pid
    for pid in "${started_pids[@]}"; do stop "$pid"; done
    [[ -z $mariadb_pid ]] || stop "$mariadb_pid"
    rm -rf "$work"
}
trap cleanup EXIT

if [[ $DATABASE == mariadb ]]; then
    mariadbd=$(find_tool mariadbd mysqld) || die "MariaDB's server is needed"
    install_db=$(find_tool mariadb-install-db mysql_install_db) || die "mariadb-install-db is needed"
    mariadb_client=$(find_tool mariadb mysql) || die "MariaDB's client is needed"
    free_port && mariadb_port=$REPLY
    # As scripts/test and benches/databases.sh start it; under callgrind, with
    # the smaller buffer pool and synchronous I/O valgrind copes with.
    under=() valgrind_settings=()
    if [[ $COUNT == database ]]; then
        under=(valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$work/mariadb.callgrind")
        valgrind_settings=(--innodb-use-native-aio=0 --innodb-buffer-pool-size=64M --innodb-buffer-pool-size-max=64M)
    fi
    "$install_db" --no-defaults --user="$(id -un)" --datadir="$work/mariadb" \
        --auth-root-authentication-method=normal --skip-test-db >"$work/mariadb-install.log" 2>&1 ||
        { tail -n 20 "$work/mariadb-install.log"; die "mariadb-install-db failed"; }
    "${under[@]}" "$mariadbd" --no-defaults --user="$(id -un)" --datadir="$work/mariadb" \
        --socket="$work/mariadb.sock" --pid-file="$work/mariadb.pid" --log-error="$work/mariadb.log" \
        --port="$mariadb_port" --bind-address=127.0.0.1 \
        --skip-grant-tables --skip-name-resolve --skip-log-bin \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_uca1400_ai_ci --default-time-zone=+00:00 \
        --max-connections=1000 --innodb-buffer-pool-size=256M \
        --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 "${valgrind_settings[@]}" \
        </dev/null >/dev/null 2>&1 &
    mariadb_pid=$!
    wait_for_port "$mariadb_port" "$mariadb_pid" "$work/mariadb.log"
    until "$mariadb_client" -h 127.0.0.1 -P "$mariadb_port" -u root -e 'SELECT 1' >/dev/null 2>&1; do
        ((++waited < 1200)) || die "MariaDB did not answer within 4 minutes"
        kill -0 "$mariadb_pid" 2>/dev/null || die "MariaDB exited"
        sleep 0.2
    done
fi

headers=()
expect=
method=POST
path=/v1/graphql
case $workload in
typename)
    body='{"query":"{ __typename }"}' expect='"__typename":"Query"'
    ;;
caller)
    body='{"query":"{ locale { countryCode } }"}' expect='"countryCode":"US"'
    headers=('X-Forwarded-For: 8.8.8.8')
    ;;
countries)
    body='{"query":"{ locale { countries { code name } } }"}' expect='"name":"Deutschland"'
    headers=('X-Nimbus-Locale: de')
    ;;
create)
    body='{"query":"mutation($input: CreatePostInput!){ createPost(input: $input) { id } }","variables":{"input":{"title":"@TITLE@","body":"@TEXT@","views":@VIEWS@,"published":@PUBLISHED@}}}'
    expect='"createPost":{"id":"'
    ;;
function)
    method=GET path=/v1/functions/hello-quiet body= expect='"message":"Hello"'
    ;;
function-read)
    method=GET path=/v1/functions/reader-quiet/p1 body= expect='"title":"Hello"'
    ;;
function-fresh)
    method=GET path=/v1/functions/hello body= expect='"message":"Hello"'
    ;;
read)
    body='{"query":"query($id: ID!) { document(databaseId: \"bench\", collectionId: \"posts\", id: $id) { data } }","variables":{"id":"p1"}}'
    expect='"title":"Hello"'
    ;;
*) die "unknown workload $workload" ;;
esac

# `measure NAME BINARY`: sets REPLY to "instructions answers".
# Sums the per-thread files of a dump (`OUT.N-TT`) into `instructions`, and into
# `sqlite` the part of the threads whose profile names MARKER; keeps each file
# in KEEP. Works on its caller's (`measure`'s) `dump`, `name`, `instructions`
# and `sqlite`.
sum_threads() {
    local marker=$1 file part
    instructions=0
    for file in "${dump%-*}"-*; do
        part=$(awk '/^summary:/ { print $2; exit }' "$file")
        instructions=$((instructions + part))
        if grep -q "$marker" "$file"; then sqlite=$((sqlite + part)); fi
        if [[ -n ${KEEP:-} ]]; then
            mkdir -p "$KEEP"
            cp "$file" "$KEEP/$name.callgrind-${file##*-}"
        fi
    done
}

measure() {
    local name=$1 binary=$2 port url pid database=() out seeded secret auth='' n=${#started_pids[@]}
    local settings=(NIMBUS_BENCH_VARIANT=)
    if [[ $binary == *=*:* ]]; then
        IFS=, read -r -a settings <<<"${binary%%:*}"
        binary=${binary#*:}
    fi
    free_port && port=$REPLY
    url="http://127.0.0.1:$port"
    if [[ $DATABASE == mariadb ]]; then
        "$mariadb_client" -h 127.0.0.1 -P "$mariadb_port" -u root -e "CREATE DATABASE ir_$n"
        database=(--database-url "mysql://root@127.0.0.1:$mariadb_port/ir_$n")
    fi
    out=$work/$name.callgrind
    local threads=() counted=(valgrind --tool=callgrind --callgrind-out-file="$out")
    [[ ${THREADS:-} != 1 ]] || counted+=(--separate-threads=yes)
    [[ $COUNT == nimbus ]] || counted=()
    env -u NIMBUS_DATABASE_URL -u NIMBUS_REDIS_URL -u NIMBUS_SECRET -u NIMBUS_DATA_DIR -u NIMBUS_LISTEN \
        -u NIMBUS_GEOIP_DB NIMBUS_LOG=warn NIMBUS_TRUSTED_PROXIES=127.0.0.1 "${settings[@]}" \
        "${counted[@]}" "$binary" serve --listen "127.0.0.1:$port" --data-dir "$work/data-$name" "${database[@]}" \
        >"$work/$name.out" 2>"$work/$name.err" &
    pid=$!
    started_pids+=("$pid")
    local tries=0
    until curl -sf "$url/v1/graphql" -H 'Content-Type: application/json' \
        --data-binary '{"query":"{ __typename }"}' >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { tail -n 30 "$work/$name.err"; die "$name exited"; }
        ((++tries < 1200)) || die "$name did not answer within 4 minutes"
        sleep 0.2
    done
    if [[ $workload == create ]]; then
        admin_key_from "$work/$name.out"
        seeded=$(python3 "$root/benches/databases/seed.py" nimbus "$url" "$admin_key" \
            bench@example.com 'bench-password-1' 1000)
        secret=$(sed -n 's/.*secret=\([^ ]*\).*/\1/p' <<<"$seeded")
        [[ -n $secret ]] || die "the seeding printed no session: $seeded"
        auth="Bearer $secret"
    fi
    if [[ $workload == function* || $workload == read ]]; then
        admin_key_from "$work/$name.out"
        setup=quiet
        [[ $workload == function-fresh ]] && setup=setup
        python3 "$root/benches/functions/bench.py" "$setup" "$url" "$admin_key" >"$work/$name.setup" ||
            { cat "$work/$name.setup"; die "setting up the functions failed"; }
    fi
    if [[ -n ${SQL:-} ]]; then
        [[ $DATABASE == mariadb ]] || die "SQL needs DATABASE=mariadb"
        "$mariadb_client" -h 127.0.0.1 -P "$mariadb_port" -u root "ir_$n" -e "$SQL"
    fi
    # The key of this server.
    [[ $workload != read ]] || headers=("X-Nimbus-Key: $admin_key")
    local header args=()
    for header in "${headers[@]}"; do args+=(-H "$header"); done
    if [[ $workload != create ]]; then
        local answer
        if [[ $method == GET ]]; then
            answer=$(curl -sf "$url$path" "${args[@]}" || true)
        else
            answer=$(curl -sf "$url$path" -H 'Content-Type: application/json' "${args[@]}" \
                --data-binary "$body" || true)
        fi
        [[ $answer == *"$expect"* ]] || die "$name answered $answer"
    fi
    # Warm up (caches, pools, kept answers), then count from zero.
    run_wrk "$url" "$auth" 3s "warm-$name" >/dev/null
    local counted_pid=$pid
    if [[ $COUNT == database ]]; then
        counted_pid=$mariadb_pid
        out=$work/mariadb.callgrind
        batches_before=$(flights "$url")
    fi
    callgrind_control -z "$counted_pid" >/dev/null
    run_wrk "$url" "$auth" "$DURATION" "run-$name" >"$work/$name.wrk"
    callgrind_control -d "$counted_pid" >/dev/null
    [[ $COUNT == nimbus ]] || batches_after=$(flights "$url")
    stop "$pid"
    local answers bad dump instructions
    answers=$(awk '/requests in/ { print $1; exit }' "$work/$name.wrk")
    bad=$(awk '/^BAD / { print $2 }' "$work/$name.wrk")
    ((bad == 0)) || { cat "$work/$name.wrk"; die "$name gave $bad bad answers"; }
    # The dump asked for, not the one written at exit (MariaDB's: the last one).
    dump=$(ls "$out".* 2>/dev/null | sort -V | if [[ $COUNT == nimbus ]]; then head -n 1; else tail -n 1; fi)
    [[ -n $dump ]] || die "no callgrind dump for $name"
    local sqlite=0
    if [[ $COUNT == database ]]; then
        # `sqlite` holds the database server's connection threads' part here.
        sum_threads do_handle_one_connection
    elif [[ ${THREADS:-} == 1 ]]; then
        # A thread that ran SQLite's VM is one of sqlx's SQLite workers.
        sum_threads sqlite3VdbeExec
    else
        instructions=$(awk '/^summary:/ { print $2; exit }' "$dump")
        if [[ -n ${KEEP:-} ]]; then
            mkdir -p "$KEEP"
            cp "$dump" "$KEEP/$name.callgrind"
        fi
    fi
    REPLY="$instructions $answers $sqlite"
}

# `flights URL`: "members batches" of the shared inserts and batches so far.
flights() {
    curl -sf "$1/metrics" | awk '
        /^nimbus_write_batch_members_total / { m = $2 }
        /^nimbus_write_batches_total/ && !/not_written/ { b += $2 }
        END { printf "%d %d\n", m, b }'
}

# `run_wrk URL AUTH DURATION TAG`
run_wrk() {
    BENCH_METHOD=$method BENCH_PATH=$path BENCH_BODY=$body BENCH_EXPECT=$expect \
        BENCH_AUTH=$2 BENCH_TAG=$4 BENCH_HEADERS="$(printf '%s\n' "${headers[@]}")" \
        wrk -t1 -c"$CONNECTIONS" -d"$3" --timeout 20s -s "$root/benches/databases/wrk.lua" "$1$path"
}

section "Instructions per request: $workload ($DATABASE, counted in $COUNT, wrk -c$CONNECTIONS -d$DURATION under callgrind)"
say "machine load: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -a rows=()
i=0
for binary in "$@"; do
    i=$((i + 1))
    name=$i
    measure "$name" "$binary"
    read -r instructions answers sqlite <<<"$REPLY"
    per=$((instructions / answers))
    if [[ $COUNT == database ]]; then
        read -r m0 b0 <<<"$batches_before"
        read -r m1 b1 <<<"$batches_after"
        flight=$(awk -v m=$((m1 - m0)) -v b=$((b1 - b0)) 'BEGIN { printf "%.1f", b ? m / b : 0 }')
        say "$binary: MariaDB's instructions $instructions, $answers answers: $per per request," \
            "$((sqlite / answers)) of them in its connection threads; creates per flight $flight"
        rows+=("| \`$binary\` | $answers | $flight | $((sqlite / answers)) | $(((instructions - sqlite) / answers)) | $per |")
        continue
    fi
    if [[ ${THREADS:-} == 1 ]]; then
        say "$binary: $instructions instructions, $answers answers: $per per request," \
            "$((sqlite / answers)) of them in SQLite's worker threads"
        rows+=("| \`$binary\` | $answers | $per | $((sqlite / answers)) | $(((instructions - sqlite) / answers)) |")
    else
        say "$binary: $instructions instructions, $answers answers: $per per request"
        rows+=("| \`$binary\` | $answers | $per |")
    fi
done
say ""
if [[ $COUNT == database ]]; then
    say "| binary | answers | creates per flight | MariaDB's connection threads | its background threads | all |"
    say "| --- | ---: | ---: | ---: | ---: | ---: |"
elif [[ ${THREADS:-} == 1 ]]; then
    say "| binary | answers | instructions per request | in SQLite's worker threads | in the other threads |"
    say "| --- | ---: | ---: | ---: | ---: |"
else
    say "| binary | answers | instructions per request |"
    say "| --- | ---: | ---: |"
fi
printf '%s\n' "${rows[@]}"
