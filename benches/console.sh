#!/usr/bin/env bash
# The console's performance goals (issue: "Console first load (cold cache) to
# interactive under 1 s on localhost; the document grid of a 100,000-document
# collection answers each page in under 50 ms server-side"), in one run, on
# loopback, against a release build:
#   load  benches/console/first-load.mjs in headless Chromium (playwright-core from
#         console/tests, Debian's chromium): RUNS fresh browser contexts (cold HTTP
#         cache) each, from navigation to interactive (the projects page rendered
#         with its data and its "Name" input taking the focus), signed in with an
#         admin key, then with an administrator's cookie session; and the reference,
#         a static page of the same bytes and module graph (every console module
#         replaced by one of the same size with the same imports, doing nothing)
#         served by `python3 -m http.server`.
#   grid  benches/console/grid.py: ROWS documents, then each query the document grid
#         sends (first page with its count, next page, a page half-way in by cursor
#         and by offset; unsorted, sorted, filtered), REPEAT times each, timed with
#         curl (time to first byte less time to the request sent), on SQLite and on
#         a private MariaDB (skipped when mariadbd is missing): first as the
#         collection was created (no index but the id's), then with indexes
#         on the attributes it sorts and filters by (by_price, by_category).
# Prints the machine's load beside the figures: the machine may be shared.
#
# Usage: benches/console.sh             (builds the release binary first)
# Knobs: PARTS="load grid" RUNS=20 ROWS=100000 REPEAT=20 BACKENDS="sqlite mariadb"
#        NIMBUS_BIN=path (a binary as it is)  CHROMIUM=path
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
here=$root/benches/console
source benches/lib.sh

PARTS=${PARTS:-load grid}
RUNS=${RUNS:-20}
ROWS=${ROWS:-100000}
REPEAT=${REPEAT:-20}
BACKENDS=${BACKENDS:-sqlite mariadb}

if [[ -z ${NIMBUS_BIN:-} ]]; then
    cargo build --release --locked --quiet --bin nimbus
    bin=$root/${CARGO_TARGET_DIR:-target}/release/nimbus
else
    bin=$(cd "$(dirname "$NIMBUS_BIN")" && pwd)/$(basename "$NIMBUS_BIN")
fi
[[ -x $bin ]] || die "no nimbus binary at $bin"

work=$(mktemp -d)
taken_ports=()
started_pids=()
finish() {
    local pid
    for pid in "${started_pids[@]}"; do stop "$pid"; done
    rm -rf "$work"
}
trap finish EXIT

load() { cut -d' ' -f1-3 /proc/loadavg; }

# `start_nimbus NAME [DATABASE_URL]`: a fresh server on a free port (sets url, key).
start_nimbus() {
    local name=$1 database=${2:-} dir=$work/$1
    mkdir -p "$dir"
    free_port && port=$REPLY
    url="http://127.0.0.1:$port"
    local settings=(NIMBUS_DATA_DIR="$dir/data" NIMBUS_LISTEN="127.0.0.1:$port" NIMBUS_LOG=warn NIMBUS_RATE_LIMITS=false)
    [[ -n $database ]] && settings+=(NIMBUS_DATABASE_URL="$database")
    run() { env $(env | sed -n 's/^\(NIMBUS_[A-Z0-9_]*\)=.*/-u \1/p') "${settings[@]}" "$bin" "$@"; }
    key=$(run key create --project default --scopes admin --name bench 2>>"$dir/server.log")
    admin_email=bench-admin@example.com
    admin_password="Bench-Harbor-$RANDOM-$RANDOM-Lantern"
    printf '%s\n' "$admin_password" | run admin create --email "$admin_email" --password-stdin >>"$dir/server.log" 2>&1
    run serve >>"$dir/server.log" 2>&1 &
    nimbus_pid=$!
    started_pids+=("$nimbus_pid")
    wait_for_port "$port" "$nimbus_pid" "$dir/server.log"
}

section "Machine"
say "CPU: $(nproc) × $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
say "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src console || echo ' (with changes)')"
say "nimbus: $bin"
say "load average at start: $(load)"

if [[ " $PARTS " == *" load "* ]]; then
    [[ -d console/tests/node_modules/playwright-core ]] ||
        (cd console/tests && npm ci --no-audit --no-fund --loglevel=error)
    section "Console first load, cold cache, to interactive ($RUNS runs each)"
    say "chromium: $("${CHROMIUM:-/usr/bin/chromium}" --version 2>/dev/null)"
    start_nimbus load
    say "load average before: $(load)"
    node "$here/first-load.mjs" console "$url/console" "$key" "$RUNS" | tee "$work/console.txt" | grep RESULT
    say "load average: $(load)"
    node "$here/first-load.mjs" cookie "$url/console" "$admin_email:$admin_password" "$RUNS" | tee "$work/cookie.txt" | grep RESULT
    say "load average: $(load)"
    say "console: $(tail -n 2 "$work/console.txt" | head -n 1 | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print(r["requests"], "requests,", r["bytes"], "bytes decoded")')"

    # The reference: the console's files as one static folder, each module the same
    # size with the same imports and nothing else; the entry renders the heading and
    # input the watcher waits for.
    python3 - "$root/console" "$work/static" <<'PY'
import os, re, sys
src, out = sys.argv[1:3]
os.makedirs(os.path.join(out, "vendor"), exist_ok=True)
imports = re.compile(r'(?:import|from)\s*"(\./[^"]+)"')
for folder, _, files in os.walk(src):
    if "tests" in folder.split(os.sep):
        continue
    for name in files:
        path = os.path.join(folder, name)
        rel = os.path.relpath(path, src)
        target = os.path.join(out, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        data = open(path, "rb").read()
        if name.endswith(".js"):
            text = data.decode()
            head = "".join(f'import "{m}";\n' for m in dict.fromkeys(imports.findall(text)))
            if rel == "app.js":
                head += ('const main = document.getElementById("app");\n'
                         'main.innerHTML = \'<main><h1>Reference</h1><label for="n">Name</label><input id="n"></main>\';\n')
            pad = max(0, len(data) - len(head) - 6)
            data = (head + "/*" + "x" * pad + "*/\n").encode()
        open(target, "wb").write(data)
html = open(os.path.join(src, "index.html")).read().replace("{{ASSETS}}", ".")
open(os.path.join(out, "index.html"), "w").write(html)
PY
    free_port && static_port=$REPLY
    (cd "$work/static" && exec python3 -m http.server "$static_port" --bind 127.0.0.1) >"$work/static.log" 2>&1 &
    started_pids+=("$!")
    wait_for_port "$static_port" "$!" "$work/static.log"
    node "$here/first-load.mjs" static "http://127.0.0.1:$static_port/index.html" - "$RUNS" | tee "$work/static.txt" | grep RESULT
    say "reference: python3 -m http.server $(python3 --version | cut -d' ' -f2); $(tail -n 2 "$work/static.txt" | head -n 1 | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print(r["requests"], "requests,", r["bytes"], "bytes")')"
    say "load average after: $(load)"
    stop "$nimbus_pid"
fi

if [[ " $PARTS " == *" grid "* ]]; then
    for backend in $BACKENDS; do
        database=
        if [[ $backend == mariadb ]]; then
            mariadbd=$(find_tool mariadbd mysqld) || mariadbd=
            install_db=$(find_tool mariadb-install-db mysql_install_db) || install_db=
            client=$(find_tool mariadb mysql) || client=
            if [[ -z $mariadbd || -z $install_db || -z $client ]]; then
                say "!!! MariaDB is not installed: the grid on SQLite only"
                continue
            fi
            free_port && mariadb_port=$REPLY
            "$install_db" --no-defaults --user="$(id -un)" --datadir="$work/mariadb" \
                --auth-root-authentication-method=normal --skip-test-db >"$work/mariadb-install.log" 2>&1 ||
                { tail -n 30 "$work/mariadb-install.log"; die "mariadb-install-db failed"; }
            "$mariadbd" --no-defaults --user="$(id -un)" --datadir="$work/mariadb" \
                --socket="$work/mariadb.sock" --pid-file="$work/mariadb.pid" --log-error="$work/mariadb.log" \
                --port="$mariadb_port" --bind-address=127.0.0.1 \
                --skip-grant-tables --skip-name-resolve --skip-log-bin \
                --character-set-server=utf8mb4 --collation-server=utf8mb4_uca1400_ai_ci --default-time-zone=+00:00 \
                --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 \
                </dev/null >/dev/null 2>&1 &
            started_pids+=("$!")
            wait_for_port "$mariadb_port" "$!" "$work/mariadb.log"
            "$client" --no-defaults --protocol=tcp -h 127.0.0.1 -P "$mariadb_port" -u root -e 'CREATE DATABASE nimbus_grid'
            database="mysql://root@127.0.0.1:$mariadb_port/nimbus_grid"
            section "Document grid, $ROWS documents, MariaDB $("$mariadbd" --version | awk '{ print $3 }')"
        else
            section "Document grid, $ROWS documents, SQLite"
        fi
        start_nimbus "grid-$backend" "$database"
        python3 "$here/grid.py" seed "$url" "$key" "$ROWS"
        say "-- as created: no index but the id's"
        say "load average before: $(load)"
        python3 "$here/grid.py" time "$url" "$key" "$REPEAT"
        say "-- with single-column indexes on price and category (by_price, by_category)"
        python3 "$here/grid.py" index "$url" "$key" -
        say "load average before: $(load)"
        python3 "$here/grid.py" time "$url" "$key" "$REPEAT"
        say "load average after: $(load)"
        stop "$nimbus_pid"
    done
fi
