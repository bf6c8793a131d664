#!/usr/bin/env bash
# Webhook deliveries per second to a local receiver, and a subscriber resuming after
# missed events, on `nimbus serve` (release build, SQLite, in-process bus), each beside
# a reference measured in the same run (see benches/webhooks/bench.py):
#   deliveries  EVENTS document creates (createPosts, 1,000 per request), one webhook
#               on `databases.*.collections.*.documents.*.create` to an asyncio
#               receiver on 127.0.0.1; reference: the same receiver driven directly,
#               one connection per request, CONCURRENCY at once
#   resume      a `realtime(channels: ["documents"])` subscriber away while MISSED
#               documents are created, back with `after: cursor`; reference: a live
#               subscriber receiving as many events while they are made
# Prints one JSON line per measurement.
#
# Usage: benches/webhooks.sh
# Knobs: EVENTS=10000 CONCURRENCY="8 32" MISSED=10000 NIMBUS_BIN=path
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
if [[ -z ${NIMBUS_BIN:-} ]]; then
    cargo build --release --bin nimbus
    NIMBUS_BIN=${CARGO_TARGET_DIR:-target}/release/nimbus
fi
printf '%s at %s, rustc %s\n' "$(date -u +%FT%TZ)" "$(git rev-parse --short HEAD)" "$(rustc --version | cut -d' ' -f2)"
for concurrency in ${CONCURRENCY:-8 32}; do
    python3 "$here/webhooks/bench.py" run "$NIMBUS_BIN" "${EVENTS:-10000}" "$concurrency"
done
python3 "$here/webhooks/bench.py" resume "$NIMBUS_BIN" "${MISSED:-10000}"
