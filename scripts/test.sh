#!/usr/bin/env bash
# samtext tests: one command, against a real FiftyOne database in a throw-away folder.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { echo "test: run 'bash scripts/setup.sh' first" >&2; exit 1; }

export FIFTYONE_DATABASE_DIR="${FIFTYONE_DATABASE_DIR:-$(mktemp -d /tmp/samtext-test-db-XXXX)}"
export FIFTYONE_DATABASE_VALIDATION=false FIFTYONE_DO_NOT_TRACK=true FIFTYONE_SHOW_PROGRESS_BARS=false
export SAMTEXT_CACHE_DIR="${SAMTEXT_CACHE_DIR:-$(mktemp -d /tmp/samtext-test-cache-XXXX)}"

set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
pkill -f "mongod.*${FIFTYONE_DATABASE_DIR}" 2>/dev/null || true
if [ "$status" -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$status"
