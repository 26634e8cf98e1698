#!/usr/bin/env bash
# Create .venv (if missing) and install clipforge into it.
#   scripts/setup_env.sh          runtime install (demo / CLI)
#   scripts/setup_env.sh dev      + test dependencies (open_clip, transformers, pytest, ruff)
# torch 2.14.1 + torchvision 0.29.1 are pinned because open_clip (a test dependency)
# needs torchvision, and this pair is the one that installs cleanly side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
if [ "${1:-}" = "dev" ]; then
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  # headless Chromium + driver for the search web-page test (tests/test_serve_browser.py)
  if ! command -v chromedriver >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
  fi
else
  .venv/bin/python -m pip install --quiet -e ".[all]"
fi
