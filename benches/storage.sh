#!/usr/bin/env bash
# Nimbus Storage beside the machine's own limits, in one run, on loopback only:
#   transfer  a SIZE_MIB MiB file of random bytes, REPEAT times each, median:
#             - references: `cp` of the file on the same disk (the data directory's)
#               and `cat` of it to /dev/null
#             - upload in one multipart GraphQL request (`createFile`, curl -F)
#             - upload in 5 MiB chunks (`createFileUpload`, then `PUT uploadUrl` per
#               chunk, all from one curl process on one connection, as a client
#               library sends them)
#             - download (`/download`, curl to /dev/null)
#             - reference: the same file from a bare HTTP server that holds it in
#               memory (the load tool's `file-reference`, axum, 512 KiB frames),
#               curl to /dev/null: what any download over HTTP/1.1 on loopback
#               reaches on this machine at best
#             into a plain bucket (no compression, no encryption) and an encrypted
#             one (AES-256-GCM at rest), in MiB/s and as ratios of `cp` (uploads)
#             and `cat` (downloads) measured in the same run, against the goals:
#             multipart ≥ 0.50× cp, chunked ≥ 0.35×, encrypted (both ways of
#             uploading) ≥ 0.30×, plain download ≥ 0.60× cat; and the server's peak
#             RSS (VmHWM) over all of it, against the goal of staying under 64 MiB;
#             and the server's CPU time per MiB moved for each kind of transfer
#             (user + system, from /proc), which a busy machine disturbs far less
#             than the rates, and the page faults it took per MiB (minor faults,
#             from /proc: memory given back to the system and touched again)
#   preview   a 12-megapixel JPEG (4000×3000, ImageMagick's plasma fractal, quality
#             90) to 400 px wide: the first request (decode, resize, encode, cache)
#             and cached ones, beside ImageMagick's `convert photo.jpg -resize 400x`
#             on the same file
# Prints the machine, every figure, the goals with verdicts and a Markdown block for
# benches/RESULTS.md.
#
# Usage: benches/storage.sh      (from anywhere; builds the release binary first,
#                                 honouring CARGO_TARGET_DIR; about 2 minutes)
# Knobs (environment):
#   SIZE_MIB=100 REPEAT=3 PREVIEW_REPEAT=10 QUIET_WAIT=120
#   NIMBUS_BIN=path LOAD_BIN=path   use these binaries instead of building them
# Needs curl, jq, and ImageMagick (`apt-get install imagemagick`; installed here when
# missing and apt-get is at hand).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=benches/lib.sh
source "$root/benches/lib.sh"

SIZE_MIB=${SIZE_MIB:-100}
REPEAT=${REPEAT:-3}
PREVIEW_REPEAT=${PREVIEW_REPEAT:-10}
QUIET_WAIT=${QUIET_WAIT:-120}

# ImageMagick 6 installs /usr/bin/convert; prefer it to any other `convert` on the PATH.
convert_bin=/usr/bin/convert
if [[ ! -x $convert_bin ]]; then
    if command -v apt-get >/dev/null; then
        sudo=
        ((EUID == 0)) || sudo=sudo
        $sudo apt-get install -y -qq --no-install-recommends imagemagick >/dev/null ||
            die "ImageMagick is needed as the preview reference: apt-get install imagemagick"
    else
        die "ImageMagick is needed as the preview reference: apt-get install imagemagick"
    fi
fi
for tool in curl jq; do command -v "$tool" >/dev/null || die "$tool is needed"; done

# The work directory holds the data directory too: `cp` and Nimbus use the same disk.
open_workspace storage-bench

noisy=()
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mib_per_s() { awk -v mib="$SIZE_MIB" -v s="$1" 'BEGIN { printf "%.0f", mib / s }'; }
now() { printf '%s' "$EPOCHREALTIME"; }
# The server's CPU time so far (user + system), in clock ticks.
server_ticks() { awk '{ print $14 + $15 }' "/proc/$nimbus_pid/stat"; }
# The server's minor page faults so far.
server_faults() { awk '{ print $10 }' "/proc/$nimbus_pid/stat"; }
ticks_per_s=$(getconf CLK_TCK)
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.4f", b - a }'; }

section "Machine"
describe_machine
disk=$(df -h "$work" | awk 'NR == 2 { print $1 " (" $2 ")" }')
magick_version=$("$convert_bin" -version | awk 'NR == 1 { print $3 }')
say "commit:   $commit"
say "cpu:      $machine"
say "memory:   $memory"
say "disk:     $disk, work directory $work"
say "kernel:   $(uname -sr)"
say "magick:   ImageMagick $magick_version"

nimbus_binary "$work"
load_binary "$work"

section "Inputs"
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$work/big.bin"
big_sha=$(sha256sum "$work/big.bin" | cut -d ' ' -f 1)
say "big.bin:   $SIZE_MIB MiB of random bytes"
"$convert_bin" -seed 7 -size 4000x3000 plasma:fractal -quality 90 "$work/photo.jpg"
say "photo.jpg: 4000×3000 JPEG, $(($(stat -c %s "$work/photo.jpg") / 1024)) KiB"

section "(a) Reference: cp on the same disk"
wait_for_quiet || noisy+=("cp (${REPLY}%)")
cp_times=()
for ((i = 0; i < REPEAT; i++)); do
    t=$(now)
    cp "$work/big.bin" "$work/copy.bin"
    cp_times+=("$(since "$t")")
    rm -f "$work/copy.bin"
done
cp_s=$(printf '%s\n' "${cp_times[@]}" | median)
cp_rate=$(mib_per_s "$cp_s")
say "cp: ${cp_times[*]} s -> median $cp_s s = $cp_rate MiB/s"
cat_times=()
for ((i = 0; i < REPEAT; i++)); do
    t=$(now)
    cat "$work/big.bin" >/dev/null
    cat_times+=("$(since "$t")")
done
cat_s=$(printf '%s\n' "${cat_times[@]}" | median)
cat_rate=$(mib_per_s "$cat_s")
say "cat to /dev/null: ${cat_times[*]} s -> median $cat_s s = $cat_rate MiB/s"

free_port && port=$REPLY
"$work/load" file-reference --listen "127.0.0.1:$port" --file "$work/big.bin" >"$work/file-reference.out" 2>&1 &
reference_pid=$!
started_pids+=("$reference_pid")
wait_for_port "$port" "$reference_pid" "$work/file-reference.out"
bare_times=()
for ((i = 0; i < REPEAT; i++)); do
    t=$(now)
    got=$(curl -sf "http://127.0.0.1:$port/" -o /dev/null -w '%{size_download}')
    bare_times+=("$(since "$t")")
    [[ $got == $((SIZE_MIB * 1024 * 1024)) ]] || die "the bare server sent $got bytes"
done
stop "$reference_pid"
bare_s=$(printf '%s\n' "${bare_times[@]}" | median)
bare_rate=$(mib_per_s "$bare_s")
say "bare HTTP server to curl: ${bare_times[*]} s -> median $bare_s s = $bare_rate MiB/s"

section "(b) Nimbus on SQLite, local files"
free_port && port=$REPLY
url="http://127.0.0.1:$port"
mkdir -p "$work/tmp"
env -u NIMBUS_DATABASE_URL -u NIMBUS_REDIS_URL -u NIMBUS_SECRET -u NIMBUS_DATA_DIR -u NIMBUS_LISTEN -u NIMBUS_STORAGE \
    TMPDIR="$work/tmp" "$work/nimbus" serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
    --rate-limits false --max-upload-bytes $((SIZE_MIB * 2 * 1024 * 1024)) \
    >"$work/nimbus.out" 2>"$work/nimbus.err" &
nimbus_pid=$!
started_pids+=("$nimbus_pid")
wait_for_port "$port" "$nimbus_pid" "$work/nimbus.err"
admin_key_from "$work/nimbus.out"
key=$admin_key

gql() { # QUERY VARIABLES_JSON: the answer's data, or die with the answer
    local answer
    answer=$(jq -n --arg q "$1" --argjson v "$2" '{query: $q, variables: $v}' |
        curl -sf "$url/v1/graphql" -H "X-Nimbus-Key: $key" -H 'Content-Type: application/json' --data-binary @-) ||
        die "GraphQL request failed: $1"
    jq -e '.errors == null' >/dev/null <<<"$answer" || die "GraphQL errors: $answer"
    jq -c .data <<<"$answer"
}
for bucket in plain sealed; do
    encryption=false
    [[ $bucket == plain ]] || encryption=true
    gql 'mutation($i: CreateBucketInput!) { createBucket(input: $i) { id } }' \
        "{\"i\": {\"id\": \"$bucket\", \"name\": \"$bucket\", \"encryption\": $encryption, \"antivirus\": false, \"maximumFileSize\": $((SIZE_MIB * 2 * 1024 * 1024)), \"permissions\": [\"read(\\\"any\\\")\"]}}" >/dev/null
done
rss_start=$(rss_mib "$nimbus_pid")
say "server RSS after start-up and set-up: $rss_start MiB"

declare -A rate=() cpu_ms=() faults_mib=()
chunk=$((5 * 1024 * 1024))
size=$((SIZE_MIB * 1024 * 1024))
split -b "$chunk" -d -a 3 "$work/big.bin" "$work/chunk."
for bucket in plain sealed; do
    wait_for_quiet || noisy+=("$bucket transfers (${REPLY}%)")
    multipart=() chunked=() download=()
    declare -A ticks=([multipart]=0 [chunked]=0 [download]=0)
    declare -A faults=([multipart]=0 [chunked]=0 [download]=0)
    for ((i = 0; i < REPEAT; i++)); do
        id="m$i"
        c=$(server_ticks) f=$(server_faults)
        t=$(now)
        answer=$(curl -sf "$url/v1/graphql" -H "X-Nimbus-Key: $key" -H 'Apollo-Require-Preflight: true' \
            -F "operations={\"query\": \"mutation(\$i: CreateFileInput!) { createFile(input: \$i) { size checksum } }\", \"variables\": {\"i\": {\"bucketId\": \"$bucket\", \"fileId\": \"$id\", \"file\": null}}}" \
            -F 'map={"0": ["variables.i.file"]}' -F "0=@$work/big.bin;filename=big.bin")
        multipart+=("$(since "$t")")
        ticks[multipart]=$((ticks[multipart] + $(server_ticks) - c))
        faults[multipart]=$((faults[multipart] + $(server_faults) - f))
        [[ $(jq -r .data.createFile.size <<<"$answer") == "$size" ]] || die "multipart upload failed: $answer"
        [[ $(jq -r .data.createFile.checksum <<<"$answer") == "$big_sha" ]] || die "multipart upload has another checksum: $answer"

        id="c$i"
        # createFileUpload, then every chunk, from one curl on one connection.
        transfers=(-s -f -H "X-Nimbus-Key: $key" -H 'Content-Type: application/json' \
            --data-binary "{\"query\": \"mutation(\$i: CreateFileUploadInput!) { createFileUpload(input: \$i) { uploadUrl } }\", \"variables\": {\"i\": {\"bucketId\": \"$bucket\", \"fileId\": \"$id\", \"name\": \"big.bin\", \"size\": $size}}}" \
            -o "$work/start-answer" "$url/v1/graphql")
        upload_path="/v1/storage/buckets/$bucket/files/$id/upload"
        offset=0
        for part in "$work"/chunk.*; do
            length=$(stat -c %s "$part")
            # `-T` sends the chunk's file as it reads it (a PUT), as a client
            # sends a slice of a file; `--data-binary @FILE` would first read all
            # of it into memory, in small reads, while the connection waits.
            transfers+=(--next -s -f -H "X-Nimbus-Key: $key"
                -H "Content-Range: bytes $offset-$((offset + length - 1))/$size"
                -T "$part" -o "$work/chunk-answer" "$url$upload_path")
            offset=$((offset + length))
        done
        c=$(server_ticks) f=$(server_faults)
        t=$(now)
        curl "${transfers[@]}" || die "a chunked upload request failed: $(cat "$work/start-answer" "$work/chunk-answer" 2>/dev/null)"
        chunked+=("$(since "$t")")
        ticks[chunked]=$((ticks[chunked] + $(server_ticks) - c))
        faults[chunked]=$((faults[chunked] + $(server_faults) - f))
        [[ $(jq -r .data.createFileUpload.uploadUrl "$work/start-answer") == "$upload_path"* ]] ||
            die "createFileUpload answered another uploadUrl: $(cat "$work/start-answer")"
        [[ $(jq -r .status "$work/chunk-answer") == READY ]] || die "chunked upload did not complete: $(cat "$work/chunk-answer")"
        [[ $(jq -r .checksum "$work/chunk-answer") == "$big_sha" ]] || die "chunked upload has another checksum: $(cat "$work/chunk-answer")"

        c=$(server_ticks) f=$(server_faults)
        t=$(now)
        got=$(curl -sf "$url/v1/storage/buckets/$bucket/files/m$i/download" -H "X-Nimbus-Key: $key" \
            -o /dev/null -w '%{size_download}')
        download+=("$(since "$t")")
        ticks[download]=$((ticks[download] + $(server_ticks) - c))
        faults[download]=$((faults[download] + $(server_faults) - f))
        [[ $got == "$size" ]] || die "download returned $got bytes"
    done
    for kind in multipart chunked download; do
        unset -n times 2>/dev/null || true
        declare -n times=$kind
        seconds=$(printf '%s\n' "${times[@]}" | median)
        rate[$bucket.$kind]=$(mib_per_s "$seconds")
        cpu_ms[$bucket.$kind]=$(awk -v t="${ticks[$kind]}" -v hz="$ticks_per_s" -v mib="$SIZE_MIB" -v n="$REPEAT" \
            'BEGIN { printf "%.2f", t / hz * 1000 / (mib * n) }')
        faults_mib[$bucket.$kind]=$(awk -v n="${faults[$kind]}" -v mib="$SIZE_MIB" -v r="$REPEAT" \
            'BEGIN { printf "%.0f", n / (mib * r) }')
        say "$bucket $kind: ${times[*]} s -> median $seconds s = ${rate[$bucket.$kind]} MiB/s; server CPU ${cpu_ms[$bucket.$kind]} ms/MiB, ${faults_mib[$bucket.$kind]} page faults/MiB"
    done
done
peak=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$nimbus_pid/status")
say "server peak RSS (VmHWM) over all transfers: $peak MiB"

section "(c) Preview of a 12-megapixel JPEG to 400 px wide"
answer=$(curl -s "$url/v1/graphql" -H "X-Nimbus-Key: $key" -H 'Apollo-Require-Preflight: true' \
    -F 'operations={"query": "mutation($i: CreateFileInput!) { createFile(input: $i) { mimeType } }", "variables": {"i": {"bucketId": "plain", "fileId": "photo", "file": null}}}' \
    -F 'map={"0": ["variables.i.file"]}' -F "0=@$work/photo.jpg;filename=photo.jpg")
[[ $(jq -r .data.createFile.mimeType <<<"$answer") == image/jpeg ]] || die "photo upload failed: $answer"
preview_url="$url/v1/storage/buckets/plain/files/photo/preview?width=400"
wait_for_quiet || noisy+=("preview (${REPLY}%)")
first=$(curl -s "$preview_url" -o "$work/preview.jpg" -w '%{http_code} %{time_total}')
[[ $first == 200\ * ]] || die "preview failed ($first): $(head -c 500 "$work/preview.jpg")"
first=${first#200 }
dimensions=$("$convert_bin" "$work/preview.jpg" -format '%w×%h' info:)
say "first (rendered): $first s -> $dimensions"
cached=()
for ((i = 0; i < PREVIEW_REPEAT; i++)); do
    cached+=("$(curl -sf "$preview_url" -o /dev/null -w '%{time_total}')")
done
cached_s=$(printf '%s\n' "${cached[@]}" | median)
say "cached: median $cached_s s of $PREVIEW_REPEAT"
magick=()
for ((i = 0; i < REPEAT; i++)); do
    t=$(now)
    "$convert_bin" "$work/photo.jpg" -resize 400x "$work/magick.jpg"
    magick+=("$(since "$t")")
done
magick_s=$(printf '%s\n' "${magick[@]}" | median)
say "ImageMagick convert -resize 400x: ${magick[*]} s -> median $magick_s s"

section "Goals"
declare -A verdicts=()
ms() { awk -v s="$1" 'BEGIN { printf "%.1f", s * 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# `verdict "A OP B"`: MET when the comparison holds (awk evaluates it as an expression;
# passed in as a -v string it would hold whenever it is not empty).
verdict() { if awk "BEGIN { exit !($1) }"; then echo MET; else echo MISSED; fi; }
memory_verdict=$(verdict "$peak < 64")
declare -A share=() goal=()
for bucket in plain sealed; do
    for kind in multipart chunked; do
        share[$bucket.$kind]=$(ratio "${rate[$bucket.$kind]}" "$cp_rate")
    done
    share[$bucket.download]=$(ratio "${rate[$bucket.download]}" "$cat_rate")
done
goal[plain.multipart]=0.50 goal[plain.chunked]=0.35 goal[sealed.multipart]=0.30 goal[sealed.chunked]=0.30
goal[plain.download]=0.60
for name in plain.multipart plain.chunked sealed.multipart sealed.chunked plain.download; do
    reference=cp
    [[ $name == *download ]] && reference=cat
    verdicts[$name]=$(verdict "${share[$name]} >= ${goal[$name]}")
    say "$name: ${rate[$name]} MiB/s = ${share[$name]}× $reference (goal ≥ ${goal[$name]}×): ${verdicts[$name]}"
done
say "sealed.download: ${rate[sealed.download]} MiB/s = ${share[sealed.download]}× cat (no goal)"
bare_share=$(ratio "$bare_rate" "$cat_rate")
say "bare HTTP server: $bare_rate MiB/s = ${bare_share}× cat; Nimbus's plain download $(ratio "${rate[plain.download]}" "$bare_rate")× of it"
say "server memory under 64 MiB while moving ${SIZE_MIB} MiB files: peak $peak MiB: $memory_verdict"
say "preview faster than ImageMagick: first $(ms "$first") ms vs $(ms "$magick_s") ms ($(ratio "$magick_s" "$first")×): $(verdict "$first < $magick_s")"
((${#noisy[@]} == 0)) || say "measured while the machine was busy: ${noisy[*]}"

section "Markdown for benches/RESULTS.md"
cat <<EOF
Run at $commit on $machine, $memory, disk $disk; ImageMagick $magick_version. Nimbus: release build, \`nimbus serve\` on SQLite with local files in the same directory as the reference copy; curl on the same machine; median of $REPEAT.

| ${SIZE_MIB} MiB file | plain bucket | encrypted bucket (AES-256-GCM) | reference |
| --- | ---: | ---: | ---: |
| upload, one multipart request | ${rate[plain.multipart]} MiB/s (**${share[plain.multipart]}×** \`cp\`; goal ≥ 0.50: ${verdicts[plain.multipart]}) | ${rate[sealed.multipart]} MiB/s (**${share[sealed.multipart]}×**; goal ≥ 0.30: ${verdicts[sealed.multipart]}) | \`cp\` $cp_rate MiB/s |
| upload, 5 MiB chunks | ${rate[plain.chunked]} MiB/s (**${share[plain.chunked]}×**; goal ≥ 0.35: ${verdicts[plain.chunked]}) | ${rate[sealed.chunked]} MiB/s (**${share[sealed.chunked]}×**; goal ≥ 0.30: ${verdicts[sealed.chunked]}) | |
| download | ${rate[plain.download]} MiB/s (**${share[plain.download]}×** \`cat\`; goal ≥ 0.60: ${verdicts[plain.download]}) | ${rate[sealed.download]} MiB/s (${share[sealed.download]}×) | \`cat\` to /dev/null $cat_rate MiB/s |
| download from a bare HTTP server holding the file in memory (reference) | $bare_rate MiB/s (${bare_share}× \`cat\`; Nimbus's plain download $(ratio "${rate[plain.download]}" "$bare_rate")× of it) | | |
| server CPU time per MiB, upload in one request / in chunks / download | ${cpu_ms[plain.multipart]} / ${cpu_ms[plain.chunked]} / ${cpu_ms[plain.download]} ms | ${cpu_ms[sealed.multipart]} / ${cpu_ms[sealed.chunked]} / ${cpu_ms[sealed.download]} ms | |
| server page faults per MiB, the same | ${faults_mib[plain.multipart]} / ${faults_mib[plain.chunked]} / ${faults_mib[plain.download]} | ${faults_mib[sealed.multipart]} / ${faults_mib[sealed.chunked]} / ${faults_mib[sealed.download]} | |
| server peak RSS over all of it (start: $rss_start MiB) | **$peak MiB** (goal < 64: $memory_verdict) | | |

| 12 MP JPEG → 400 px wide | Nimbus | ImageMagick \`convert -resize 400x\` |
| --- | ---: | ---: |
| first request (decode, resize, encode, cache) | $(ms "$first") ms | $(ms "$magick_s") ms |
| cached | $(ms "$cached_s") ms | |
EOF
