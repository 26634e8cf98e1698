#!/usr/bin/env bash
# The test suite on a fresh machine: set up .venv with test extras, lint, build the docs
# strictly (broken links, references or results markers fail), run pytest.
# Runs every tier (plain `pytest` deselects the slow one, see pyproject.toml); a -m of
# your own replaces ours: `bash scripts/test.sh -m "not slow"`. Needs ../shared beside
# the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh dev
.venv/bin/ruff check src tests benchmarks
.venv/bin/lint-imports                          # layers: nothing imports upward
.venv/bin/python scripts/check_import_cycles.py # no module circles
.venv/bin/basedpyright -p pyproject.toml        # types (pyright "basic")
site_dir="$(mktemp -d)"
trap 'rm -rf "$site_dir"' EXIT
NO_MKDOCS_2_WARNING=1 PYTHONPATH=src .venv/bin/mkdocs build --strict --quiet -d "$site_dir"
.venv/bin/python -m pytest -q -m "slow or not slow" "$@"
