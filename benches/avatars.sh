#!/usr/bin/env bash
# Avatars beside their references, in one run, on loopback only, against one release
# `nimbus serve` on SQLite with default settings:
#   flag       GET /v1/avatars/flags/de?width=200 (a 200×150 PNG, kept in the replica's
#              cache after the first request), no credential
#   download   GET …/files/{id}/download of a file of exactly the flag's byte size in a
#              bucket anyone may read, no credential (Nimbus's own file download)
#   initials   GET /v1/avatars/initials?name=Ada%20Lovelace&width=256&height=256&output=png
#              with a new `background` on every request, so each is drawn (never cached);
#              one connection, so the latency is the drawing's, not a queue's
#   convert    ImageMagick `convert` drawing the same initials (256×256, the same bundled
#              font, white on a colour) to PNG, as Appwrite does; median of CONVERT_RUNS
# wrk: 1 thread; CONNECTIONS connections for flag and download, 1 for initials;
# DURATION each, one after another. Goals (issue 25): flag ≥ 50% of download's req/s;
# initials p50 under 2 ms. Prints the machine, every figure, the verdicts and a Markdown
# block for benches/RESULTS.md.
#
# Usage: benches/avatars.sh      (from anywhere; builds the release binary first,
#                                 honouring CARGO_TARGET_DIR; about a minute after it)
# Knobs (environment): CONNECTIONS=32 DURATION=10s QUIET_WAIT=60 CONVERT_RUNS=30
#   NIMBUS_BIN=path       use this binary instead of building it
# Needs wrk, curl, jq and ImageMagick (installed with apt-get when missing, as root).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=benches/lib.sh
source "$root/benches/lib.sh"

CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-10s}
QUIET_WAIT=${QUIET_WAIT:-60}
CONVERT_RUNS=${CONVERT_RUNS:-30}
for tool in wrk curl jq; do command -v "$tool" >/dev/null || die "$tool is needed"; done
convert_bin=/usr/bin/convert
if [[ ! -x $convert_bin ]] || ! "$convert_bin" -version >/dev/null 2>&1; then
    command -v apt-get >/dev/null || die "ImageMagick is the reference: apt-get install imagemagick"
    sudo=
    ((EUID == 0)) || sudo=sudo
    $sudo apt-get install -y -qq --no-install-recommends imagemagick >/dev/null ||
        die "ImageMagick is the reference: apt-get install imagemagick"
fi
font=$root/data/avatars/fonts/DejaVuSans-Bold-subset.ttf

open_workspace avatars-bench
noisy=()

report_machine
say "wrk:      $(wrk --version 2>&1 | awk 'NR == 1 { print $2 }')"
magick_version=$("$convert_bin" -version | awk 'NR == 1 { print $3 }')
say "magick:   ImageMagick $magick_version"

nimbus_binary "$work"

section "Server"
free_port && port=$REPLY
base="http://127.0.0.1:$port"
env -u NIMBUS_DATABASE_URL -u NIMBUS_REDIS_URL -u NIMBUS_SECRET -u NIMBUS_DATA_DIR -u NIMBUS_LISTEN \
    -u NIMBUS_STORAGE NIMBUS_LOG=warn \
    "$work/nimbus" serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
    >"$work/nimbus.out" 2>"$work/nimbus.err" &
nimbus_pid=$!
started_pids+=("$nimbus_pid")
wait_for_port "$port" "$nimbus_pid" "$work/nimbus.err"
admin_key_from "$work/nimbus.out"

gql() { # QUERY VARIABLES_JSON: the answer's data, or die with the answer
    local answer
    answer=$(jq -n --arg q "$1" --argjson v "$2" '{query: $q, variables: $v}' |
        curl -sf "$base/v1/graphql" -H "X-Nimbus-Key: $admin_key" -H 'Content-Type: application/json' --data-binary @-) ||
        die "GraphQL request failed: $1"
    jq -e '.errors == null' >/dev/null <<<"$answer" || die "GraphQL errors: $answer"
    jq -c .data <<<"$answer"
}

flag_path="/v1/avatars/flags/de?width=200"
curl -sf "$base$flag_path" -o "$work/flag.png" -D "$work/flag.headers" || die "the flag did not arrive"
flag_bytes=$(stat -c %s "$work/flag.png")
grep -qi '^content-type: image/png' "$work/flag.headers" || die "the flag is not a PNG"
say "flag:     $flag_path -> PNG of $flag_bytes bytes"

# A file of the flag's byte size, in a bucket anyone may read.
gql 'mutation($i: CreateBucketInput!) { createBucket(input: $i) { id } }' \
    '{"i": {"id": "bench", "name": "bench", "encryption": false, "antivirus": false, "compression": "NONE", "permissions": ["read(\"any\")"]}}' >/dev/null
head -c "$flag_bytes" /dev/urandom >"$work/same-size.bin"
answer=$(curl -sf "$base/v1/graphql" -H "X-Nimbus-Key: $admin_key" -H 'Apollo-Require-Preflight: true' \
    -F 'operations={"query": "mutation($i: CreateFileInput!) { createFile(input: $i) { size } }", "variables": {"i": {"bucketId": "bench", "fileId": "same", "file": null}}}' \
    -F 'map={"0": ["variables.i.file"]}' -F "0=@$work/same-size.bin;filename=same-size.bin") || die "upload failed"
[[ $(jq -r .data.createFile.size <<<"$answer") == "$flag_bytes" ]] || die "upload failed: $answer"
download_path="/v1/storage/buckets/bench/files/same/download"
got=$(curl -sf "$base$download_path" -o "$work/got.bin" -w '%{size_download}') || die "the download failed"
[[ $got == "$flag_bytes" ]] || die "the download has $got bytes, expected $flag_bytes"
say "download: $download_path -> $got bytes, no credential"

initials_query="name=Ada%20Lovelace&width=256&height=256&output=png"
curl -sf "$base/v1/avatars/initials?$initials_query&background=1e88e5" -o "$work/initials.png" ||
    die "the initials did not arrive"
say "initials: /v1/avatars/initials?$initials_query&background=<new each time> -> $(stat -c %s "$work/initials.png") bytes"

# `fixed NAME PATH BYTES`: a wrk script that GETs PATH and counts answers other than
# 200 with BYTES bytes as wrong.
fixed() {
    cat >"$work/$1.lua" <<LUA
wrk.method = "GET"
wrk.path = "$2"
bad = 0
response = function(status, headers, body)
    if status ~= 200 or #body ~= $3 then bad = bad + 1 end
end
done = function(summary, latency, requests)
    io.write(string.format("BAD %d\n", bad))
end
LUA
}
fixed flag "$flag_path" "$flag_bytes"
fixed download "$download_path" "$flag_bytes"
# Each request another background, so the replica's cache never has it.
cat >"$work/initials.lua" <<LUA
counter = 0
bad = 0
request = function()
    counter = counter + 1
    return wrk.format("GET", "/v1/avatars/initials?$initials_query&background=" .. string.format("%06x", (counter * 7919) % 16777216))
end
response = function(status, headers, body)
    if status ~= 200 or string.sub(body, 2, 4) ~= "PNG" then bad = bad + 1 end
end
done = function(summary, latency, requests)
    io.write(string.format("BAD %d\n", bad))
end
LUA

declare -A rps=() p50=() p99=() bad=()
measure() { # NAME CONNECTIONS
    local name=$1
    section "$name"
    wait_for_quiet || noisy+=("$name (${REPLY}%)")
    wrk -t1 -c"$2" -d"$DURATION" --latency -s "$work/$name.lua" "$base" >"$work/$name.wrk"
    cat "$work/$name.wrk"
    rps[$name]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$work/$name.wrk")
    p50[$name]=$(awk '$1 == "50%" { print $2 }' "$work/$name.wrk")
    p99[$name]=$(awk '$1 == "99%" { print $2 }' "$work/$name.wrk")
    bad[$name]=$(awk '/^BAD / { print $2 }' "$work/$name.wrk")
    local errors
    errors=$(awk '/Non-2xx|Socket errors/' "$work/$name.wrk")
    [[ -z $errors ]] || bad[$name]="${bad[$name]} ($errors)"
}
measure download "$CONNECTIONS"
measure flag "$CONNECTIONS"
measure initials 1

section "convert"
wait_for_quiet || noisy+=("convert (${REPLY}%)")
times=()
for ((i = 0; i < CONVERT_RUNS; i++)); do
    t=$EPOCHREALTIME
    "$convert_bin" -size 256x256 "xc:#1E88E5" -font "$font" -pointsize 108 -fill white \
        -gravity center -annotate +0+0 "AL" "png:$work/convert.png"
    times+=("$(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", (b - a) * 1000 }')")
done
convert_p50=$(printf '%s\n' "${times[@]}" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
say "convert: ${times[*]} ms -> median ${convert_p50}ms ($(stat -c %s "$work/convert.png") bytes)"

# wrk prints latencies with units (us, ms, s); in milliseconds.
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /[0-9]s$/) n *= 1000; printf "%.2f", n }'; }
ratio=$(awk -v a="${rps[flag]}" -v b="${rps[download]}" 'BEGIN { printf "%.0f", 100 * a / b }')
flag_verdict=$( ((ratio >= 50)) && echo met || echo "NOT met")
initials_ms=$(to_ms "${p50[initials]}")
initials_verdict=$(awk -v a="$initials_ms" 'BEGIN { print (a < 2) ? "met" : "NOT met" }')

section "Results"
cat <<MD
Measured $(date -u '+%Y-%m-%d %H:%M') UTC at commit \`$commit\` with \`benches/avatars.sh\`
($machine; wrk 1 thread, $DURATION each; release \`nimbus serve\`, SQLite, default
settings; ImageMagick $magick_version).

| request | connections | req/s | p50 | p99 | goal | wrong answers |
| --- | ---: | ---: | ---: | ---: | --- | ---: |
| file download, $flag_bytes bytes, bucket readable by \`any\` | $CONNECTIONS | ${rps[download]} | ${p50[download]} | ${p99[download]} | reference | ${bad[download]} |
| flag \`de\` 200×150 PNG ($flag_bytes bytes), cached | $CONNECTIONS | ${rps[flag]} | ${p50[flag]} | ${p99[flag]} | ≥ 50% of the download: ${ratio}%, $flag_verdict | ${bad[flag]} |
| initials 256×256 PNG, drawn each time | 1 | ${rps[initials]} | ${p50[initials]} | ${p99[initials]} | p50 < 2 ms: $initials_verdict | ${bad[initials]} |
| ImageMagick \`convert\`, the same initials to PNG (a process each) | — | — | ${convert_p50}ms | — | reference | — |
MD
if ((${#noisy[@]})); then
    say ""
    say "Disturbed (the machine was busy before): ${noisy[*]}"
fi
