#!/usr/bin/env bash
# The whole check, as CI runs it: start a fresh Nimbus, create the blog
# collections, generate the typed client from the live schema, type-check it and
# run it. Quiet on success; on failure prints the failing step's output and the
# server's log.
#
#   NIMBUS_BIN=path/to/nimbus ./run.sh        (default: ../../target/debug/nimbus)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
started=$SECONDS

# NIMBUS_BIN is relative to where run.sh is called from; the default, to here.
bin=${NIMBUS_BIN:-$here/../../target/debug/nimbus}
if [[ ! -x $bin || -d $bin ]]; then
  echo "run.sh: no nimbus binary at $bin (set NIMBUS_BIN, or build it: cargo build)" >&2
  exit 1
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
cd "$here"

# Background jobs get process groups of their own: a step is stopped with all
# its children, at once, when the script is interrupted.
set -m

work=$(mktemp -d)
server_pid=
step_pid=
failed=1

# Stops a background job and everything it started: TERM, then KILL after 5 s.
stop_job() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

finish() {
  if [[ -n $server_pid ]]; then
    stop_job "$server_pid"
  fi
  if [[ -n $step_pid ]]; then
    stop_job "$step_pid"
  fi
  if [[ $failed -ne 0 && -s $work/server.log ]]; then
    echo "---- nimbus log (last 40 lines) ----" >&2
    tail -n 40 "$work/server.log" >&2
  fi
  rm -rf "$work"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
  echo "run.sh: FAILED: $*" >&2
  exit 1
}

# Runs one step with its output kept aside; shows it only when the step fails.
step() {
  local name=$1
  shift
  "$@" >"$work/step.log" 2>&1 &
  step_pid=$!
  if ! wait "$step_pid"; then
    step_pid=
    echo "run.sh: FAILED: $name ($*)" >&2
    cat "$work/step.log" >&2
    exit 1
  fi
  step_pid=
}

# A free port on the loopback interface.
port=$(node -e '
  const server = require("net").createServer();
  server.listen(0, "127.0.0.1", () => { console.log(server.address().port); server.close(); });
')
export NIMBUS_URL="http://127.0.0.1:$port"
export NIMBUS_PROJECT=default

# A fresh server: empty SQLite data directory, in-process bus, so that it creates
# (and prints) the first admin key.
: >"$work/server.log"
env -u NIMBUS_DATABASE_URL -u NIMBUS_REDIS_URL -u NIMBUS_SECRET \
  NIMBUS_DATA_DIR="$work/data" NIMBUS_LISTEN="127.0.0.1:$port" \
  "$bin" serve >"$work/server.log" 2>&1 &
server_pid=$!

healthy() {
  node -e '
    fetch(process.argv[1]).then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1));
  ' "$NIMBUS_URL/health"
}
deadline=$((SECONDS + 30))
until grep -q 'X-Nimbus-Key: nk_' "$work/server.log" && healthy; do
  kill -0 "$server_pid" 2>/dev/null || fail "nimbus exited at start (port $port)"
  ((SECONDS < deadline)) || break
  sleep 0.1
done
healthy || fail "nimbus did not answer 200 on $NIMBUS_URL/health within 30 s"
NIMBUS_ADMIN_KEY=$(sed -n 's/.*X-Nimbus-Key: \(nk_[A-Za-z0-9_-]*\).*/\1/p' "$work/server.log" | head -n 1)
[[ -n $NIMBUS_ADMIN_KEY ]] || fail "nimbus printed no admin key on its first start"
export NIMBUS_ADMIN_KEY

step "npm ci" npm ci --no-audit --no-fund
step "setup" npx --no-install tsx scripts/setup.ts
rm -rf src/gql
step "codegen" npx --no-install graphql-codegen
step "typecheck" npx --no-install tsc --noEmit
# The app's subscriptions use the global WebSocket: built into Node 22 and later,
# behind a flag in Node 20 and 21.
if ! node -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)'; then
  export NODE_OPTIONS="${NODE_OPTIONS:+$NODE_OPTIONS }--experimental-websocket"
fi
step "typed client" npx --no-install tsx src/main.ts

failed=0
echo "typed-client: ok in $((SECONDS - started)) s ($(tail -n 1 "$work/step.log"))"
