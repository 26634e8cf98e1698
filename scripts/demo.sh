#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then train a small CLIP from scratch on
# procedural shapes (CPU, <= 5 min) and report held-out zero-shot accuracy and retrieval.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/clipforge demo "$@"
