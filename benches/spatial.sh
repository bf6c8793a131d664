#!/usr/bin/env bash
# Spatial lists before and after a SPATIAL index, in one run, on loopback: ROWS
# points spread over the globe (pseudo-random, the same every run) in a collection
# every client reads, and three lists through the generic API, each measured with
# wrk (1 thread, CONNECTIONS keep-alive connections, DURATION) on the collection
# without the index, then again once it is made, on SQLite and on a private MariaDB:
#   near    distanceLessThan(loc, [10, 45], 3)             planar, within 3 degrees
#   box     intersects(loc, a 6 x 6 degree square around [10, 45])
#   meters  distanceLessThan(loc, [10, 45], 300000, true)  within 300 km on the sphere
# Every answer is checked against the other system's and the other phase's (the same
# ids in every one). Prints the machine, every figure and a Markdown block for
# benches/RESULTS.md.
#
# Usage: benches/spatial.sh      (builds the release binary first, honouring
#                                 CARGO_TARGET_DIR)
# Knobs (environment): ROWS=50000 CONNECTIONS=8 DURATION=5s QUIET_WAIT=30
#   SYSTEMS="sqlite mariadb"  NIMBUS_BIN=path (use this binary instead of building)
# Needs wrk, curl, jq and python3 (and mariadb-server for the MariaDB system).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=benches/lib.sh
source "$root/benches/lib.sh"

ROWS=${ROWS:-50000}
CONNECTIONS=${CONNECTIONS:-8}
DURATION=${DURATION:-5s}
QUIET_WAIT=${QUIET_WAIT:-30}
SYSTEMS=${SYSTEMS:-sqlite mariadb}
for tool in wrk curl jq python3; do command -v "$tool" >/dev/null || die "$tool is needed"; done

open_workspace spatial-bench

report_machine
if [[ " $SYSTEMS " == *" mariadb "* ]]; then
    mariadbd=$(find_tool mariadbd mysqld) || mariadbd=
    install_db=$(find_tool mariadb-install-db mysql_install_db) || install_db=
    mariadb_client=$(find_tool mariadb mysql) || mariadb_client=
    if [[ -z $mariadbd || -z $install_db || -z $mariadb_client ]]; then
        say "!!! MariaDB is not installed (apt-get install mariadb-server): SQLite only"
        SYSTEMS=${SYSTEMS//mariadb/}
    else
        say "MariaDB:  $("$mariadbd" --version | awk '{ print $3 }')"
    fi
fi

nimbus_binary "$work"

# `gql URL QUERY [VARIABLES]`: the answer's data, as the admin; a failure stops the run.
gql() {
    local answer
    answer=$(jq -nc --arg q "$2" --argjson v "${3:-{\}}" '{query: $q, variables: $v}' |
        curl -fsS "$1" -H 'Content-Type: application/json' -H "X-Nimbus-Key: $admin_key" --data-binary @-)
    jq -e '.errors == null' >/dev/null <<<"$answer" || die "$2 answered $answer"
    jq -c '.data' <<<"$answer"
}

# The points: ROWS of them, x from -180 to 180 and y from -85 to 85, by a fixed
# multiplicative sequence, written as createDocuments inputs of 1,000.
python3 - "$ROWS" "$work/batches" <<'PY'
import json, os, sys
rows, out = int(sys.argv[1]), sys.argv[2]
os.makedirs(out)
state, docs = 12345, []
for n in range(1, rows + 1):
    state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
    x = (state >> 11) / 2**53 * 360 - 180
    state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
    y = (state >> 11) / 2**53 * 170 - 85
    docs.append({"$id": f"p{n}", "loc": [round(x, 6), round(y, 6)]})
for i in range(0, rows, 1000):
    with open(f"{out}/{i // 1000:05d}.json", "w") as f:
        json.dump({"input": {"databaseId": "geo", "collectionId": "points", "documents": docs[i:i + 1000]}}, f)
PY

declare -A body=(
    [near]='{"method":"distanceLessThan","attribute":"loc","values":[[[10,45],3]]}'
    [box]='{"method":"intersects","attribute":"loc","values":[[[[7,42],[13,42],[13,48],[7,48],[7,42]]]]}'
    [meters]='{"method":"distanceLessThan","attribute":"loc","values":[[[10,45],300000,true]]}'
)
workloads="near box meters"
declare -A rps=() p50=() found=() seeded=()

# `measure SYSTEM PHASE URL`: every workload on the Nimbus at URL.
measure() {
    local system=$1 phase=$2 url=$3 name query answer
    for name in $workloads; do
        query=$(jq -nc --arg q "${body[$name]}" \
            '{query: "query($q: [String!]) { documents(databaseId: \"geo\", collectionId: \"points\", queries: $q) { total documents { id } } }", variables: {q: [$q, "{\"method\":\"limit\",\"values\":[1000]}"]}}')
        answer=$(curl -fsS "$url" -H 'Content-Type: application/json' -H "X-Nimbus-Key: $admin_key" --data-binary "$query")
        found[$system/$phase/$name]=$(jq -r '[.data.documents.documents[].id] | sort | join(",")' <<<"$answer")
        [[ -n ${found[$system/$phase/$name]} ]] || die "$name found nothing: $answer"
        cat >"$work/$name.lua" <<LUA
wrk.method = "POST"
wrk.body = [==[$query]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Nimbus-Key"] = "$admin_key"
LUA
        wait_for_quiet || say "(the machine was busy: ${REPLY}%)"
        wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/$name.lua" "$url" >"$work/$system-$phase-$name.wrk"
        rps[$system/$phase/$name]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$work/$system-$phase-$name.wrk")
        p50[$system/$phase/$name]=$(awk '$1 == "50%" { print $2 }' "$work/$system-$phase-$name.wrk")
        ! grep -q 'Non-2xx' "$work/$system-$phase-$name.wrk" || die "$name: answers other than 200"
        say "$system $phase $name: ${rps[$system/$phase/$name]} req/s, p50 ${p50[$system/$phase/$name]}," \
            "$(tr ',' '\n' <<<"${found[$system/$phase/$name]}" | wc -l) found"
    done
}

for system in $SYSTEMS; do
    section "Nimbus on $system"
    free_port && port=$REPLY
    mkdir -p "$work/$system"
    database=()
    if [[ $system == mariadb ]]; then
        start_mariadb "$work/$system" "$work" nimbus_spatial
        database=(--database-url "mysql://root@127.0.0.1:$mariadb_port/nimbus_spatial")
    fi
    env -u NIMBUS_DATABASE_URL -u NIMBUS_REDIS_URL -u NIMBUS_SECRET -u NIMBUS_DATA_DIR -u NIMBUS_LISTEN \
        NIMBUS_LOG=warn "$work/nimbus" serve --listen "127.0.0.1:$port" --data-dir "$work/$system/data" \
        "${database[@]}" >"$work/$system.out" 2>"$work/$system.err" &
    nimbus_pid=$!
    started_pids+=("$nimbus_pid")
    wait_for_port "$port" "$nimbus_pid" "$work/$system.err"
    admin_key_from "$work/$system.out"
    url="http://127.0.0.1:$port/v1/graphql"
    gql "$url" 'mutation { createDatabase(input: {id: "geo", name: "Geo"}) { id } }' >/dev/null
    gql "$url" 'mutation { createCollection(input: {databaseId: "geo", id: "points", name: "points", permissions: ["read(\"any\")"], attributes: [{key: "loc", type: POINT, required: true}]}) { id } }' >/dev/null
    started=$(date +%s.%N)
    for batch in "$work"/batches/*.json; do
        jq -c --arg q 'mutation($input: CreateDocumentsInput!) { createDocuments(input: $input) { id } }' \
            '{query: $q, variables: .}' "$batch" |
            curl -fsS "$url" -H 'Content-Type: application/json' -H "X-Nimbus-Key: $admin_key" \
                --data-binary @- | jq -e '.errors == null' >/dev/null || die "seeding failed"
    done
    seeded[$system]=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    say "seeded $ROWS points in ${seeded[$system]} s"
    measure "$system" plain "$url"
    started=$(date +%s.%N)
    gql "$url" 'mutation { createIndex(input: {databaseId: "geo", collectionId: "points", index: {key: "near", type: SPATIAL, attributes: ["loc"]}}) { id } }' >/dev/null
    say "SPATIAL index made in $(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }') s"
    measure "$system" indexed "$url"
    stop "$nimbus_pid"
done

declare -A reference_of=()
for key in "${!found[@]}"; do
    name=${key##*/}
    if [[ -z ${reference_of[$name]:-} ]]; then
        reference_of[$name]=${found[$key]}
    elif [[ ${reference_of[$name]} != "${found[$key]}" ]]; then
        die "$key found other documents than the other runs of $name"
    fi
done
say "every run of each list found the same documents"

section "Results"
cat <<MD
Measured $(date -u '+%Y-%m-%d %H:%M') UTC at commit \`$commit\` with \`benches/spatial.sh\`
($machine; $ROWS points; wrk 1 thread, $CONNECTIONS connections, $DURATION each; release
\`nimbus serve\`, read with the admin key).

| system | list | found | without index: req/s (p50) | SPATIAL index: req/s (p50) | indexed / without |
| --- | --- | ---: | ---: | ---: | ---: |
MD
for system in $SYSTEMS; do
    for name in $workloads; do
        count=$(tr ',' '\n' <<<"${found[$system/plain/$name]}" | wc -l)
        ratio=$(awk -v a="${rps[$system/indexed/$name]}" -v b="${rps[$system/plain/$name]}" 'BEGIN { printf "%.1f", a / b }')
        say "| $system | $name | $count | ${rps[$system/plain/$name]} (${p50[$system/plain/$name]}) | ${rps[$system/indexed/$name]} (${p50[$system/indexed/$name]}) | ${ratio}x |"
    done
done
