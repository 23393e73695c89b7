#!/usr/bin/env bash
# samtext tests: one command, against a real FiftyOne database of their own.
#   bash scripts/test.sh [pytest args]
# Starts a private mongod (FiftyOne's bundled binary) on a free loopback port with a throw-away data folder,
# points FiftyOne at it with FIFTYONE_DATABASE_URI, and stops it at the end. (FiftyOne's own service would
# attach to any FiftyOne mongod already running on the machine, whatever FIFTYONE_DATABASE_DIR says, and
# tests would then share, and delete, other processes' datasets.) With FIFTYONE_DATABASE_URI already set,
# that database is used instead.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SAMTEXT_VENV:-.venv}  # scripts/test_oldest.sh runs the suite in another one
[ -x "$VENV/bin/python" ] || { echo "test: run 'bash scripts/setup.sh' first" >&2; exit 1; }

export FIFTYONE_DATABASE_VALIDATION=false FIFTYONE_DO_NOT_TRACK=true FIFTYONE_SHOW_PROGRESS_BARS=false
# Folders this script makes are removed at the end (a suite run must not leave gigabytes in /tmp).
made=()
if [ -z "${SAMTEXT_CACHE_DIR:-}" ]; then
  SAMTEXT_CACHE_DIR=$(mktemp -d /tmp/samtext-test-cache-XXXX); made+=("$SAMTEXT_CACHE_DIR")
fi
export SAMTEXT_CACHE_DIR

mongod_pid=""
clean_up() {
  [ -z "$mongod_pid" ] || { kill "$mongod_pid" 2>/dev/null; wait "$mongod_pid" 2>/dev/null || true; }
  [ "${#made[@]}" -eq 0 ] || rm -rf "${made[@]}"
}
trap clean_up EXIT

if [ -z "${FIFTYONE_DATABASE_URI:-}" ]; then
  mongod=$(ls "$VENV"/lib/python3*/site-packages/fiftyone/db/bin/mongod 2>/dev/null | head -n 1)
  [ -n "$mongod" ] || { echo "test: no mongod in $VENV; run 'bash scripts/setup.sh' (or set FIFTYONE_DATABASE_URI)" >&2; exit 1; }
  dbdir=$(mktemp -d /tmp/samtext-test-db-XXXX); made+=("$dbdir")
  port=$("$VENV/bin/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  "$mongod" --dbpath "$dbdir" --port "$port" --bind_ip 127.0.0.1 --logpath "$dbdir/mongod.log" >/dev/null &
  mongod_pid=$!
  export FIFTYONE_DATABASE_URI="mongodb://127.0.0.1:$port" FIFTYONE_DATABASE_DIR="$dbdir"
  "$VENV/bin/python" - <<'PY' || { echo "test: mongod did not start; its log:" >&2; tail -n 20 "$dbdir/mongod.log" >&2; exit 1; }
import os, sys, time
import pymongo
for _ in range(120):
    try:
        pymongo.MongoClient(os.environ["FIFTYONE_DATABASE_URI"], serverSelectionTimeoutMS=500).admin.command("ping")
        sys.exit(0)
    except pymongo.errors.PyMongoError:
        time.sleep(0.25)
sys.exit(1)
PY
fi

set +e
"$VENV/bin/python" -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$status"
