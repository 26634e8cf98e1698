#!/usr/bin/env bash
# The test suite on a fresh machine: set up .venv with test extras, lint, run pytest.
# Needs ../shared (data and reference files) beside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh dev
.venv/bin/ruff check src tests benchmarks
.venv/bin/python -m pytest -q "$@"
