"""Training: typed configs, the loop, GradCache, optimizer and crash-safe checkpoints.

>>> from clipforge.train import load_config, train
>>> result = train(load_config("examples/train_procedural_tiny.yaml", ["steps=30"]))  # doctest: +SKIP
"""

from ..eval.procedural_zeroshot import evaluate_zero_shot
from .checkpoint import Checkpoint, load_checkpoint, load_latest, save_checkpoint
from .loop import NonFiniteLossError, TrainResult, train
from .outdir import OutputDirError
from .train_config import (
    ConfigError,
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    config_from_dict,
    load_config,
)

__all__ = [
    "Checkpoint",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "NonFiniteLossError",
    "OptimConfig",
    "OutputDirError",
    "TrainConfig",
    "TrainResult",
    "config_from_dict",
    "evaluate_zero_shot",
    "load_checkpoint",
    "load_config",
    "load_latest",
    "save_checkpoint",
    "train",
]
