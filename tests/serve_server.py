"""``python -m tests.serve_server --db DIR --port P``: serve a tiny-model index the way
``clipforge serve`` does (same runner), with the image tower slowed by ``SLOW_ENV``
seconds per forward pass (the hook travels with the model into the re-index process)."""

from __future__ import annotations

import argparse

import clipforge
from clipforge.serve import ServeConfig, create_app, run
from tests.conftest import tiny_model
from tests.serve_helpers import slow_hook


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    model = tiny_model()
    model.tower("image").register_forward_pre_hook(slow_hook)
    index = clipforge.Index.open(args.db, model)
    run(create_app(index, ServeConfig(api_key="k")), port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
