#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then run the model-zoo self-check.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/clipforge selfcheck "$@"
