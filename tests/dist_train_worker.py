"""Worker for the multi-process training tests (run under ``torchrun``, gloo, CPU).

``python dist_train_worker.py CONFIG.json key=value ...`` runs :func:`clipforge.train.train`
on the config plus overrides; the test reads the losses from ``metrics.jsonl`` and the
weights from the final checkpoint, and compares them with a single-process run.
"""

from __future__ import annotations

import os
import sys

import torch

from clipforge.train import load_config, train


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    train(load_config(argv[0], argv[1:]))


if __name__ == "__main__":
    main(sys.argv[1:])
    # Gloo's C++ worker threads can abort the interpreter's teardown (see
    # dist_loss_worker.py); the run is complete and the group destroyed, so skip it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
