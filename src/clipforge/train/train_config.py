"""Typed training configuration, loaded from YAML with ``a.b=value`` overrides.

Every section is a dataclass built by the one config engine (:mod:`clipforge.configs.engine`):
unknown keys are an error that names the key with a did-you-mean hint, values are coerced to
the declared types (``"1e-3"`` → ``0.001``, ``"0.9,0.98"`` → ``(0.9, 0.98)``) and numeric
ranges are checked, all before anything is built. ``data.options`` and each
``eval[i].options`` are checked against the options dataclass their registry declares
(``data.sources``, ``eval.registry``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..configs import ClipConfig, get_config
from ..configs.engine import (
    ConfigError,
    apply_override,
    bounded,
    build,
    check_ranges,
    coerce,
)
from ..data.data_config import DataConfig  # re-exported: it lives in data/ now
from ..eval.eval_config import EvalConfig, check_eval_list
from ..runtime import Precision

__all__ = [
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LoraConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config",
]



@dataclass
class ModelConfig:
    """What to train: a named or inline architecture, or a checkpoint to fine-tune from."""

    architecture: str | dict[str, Any] | None = None  # name, or a ClipConfig dict
    init_from: str | None = None  # checkpoint path/dir (anything clipforge.load reads)
    pretrained: str | None = None  # registered tag for a named architecture
    activation: Literal["gelu", "quick_gelu"] | None = None
    #: the text tokenizer: a ``tokenizer.json`` file or a directory holding one (e.g. a SigLIP
    #: architecture trained from scratch), or ``"clip"`` (CLIP's BPE); default: the
    #: checkpoint's own (a SigLIP checkpoint's tokenizer.json), else CLIP's BPE
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        if self.architecture is None and self.init_from is None:
            raise ConfigError("model: set 'model.architecture' or 'model.init_from'")
        if self.tokenizer not in (None, "clip") and not Path(self.tokenizer).exists():
            raise ConfigError(f"model.tokenizer: no such file or directory: {self.tokenizer}")
        if self.architecture is not None:
            self.clip_config()  # validated now, before anything is built

    def clip_config(self) -> ClipConfig | None:
        """The architecture as a validated :class:`ClipConfig` (``None`` when only
        ``init_from`` is given). Inline dicts default to a ViT image tower."""
        arch = self.architecture
        if arch is None:
            return None
        if isinstance(arch, str):
            return get_config(arch)
        vision = {"type": "vit", **dict(arch.get("vision") or {})}
        return ClipConfig.from_dict({**arch, "vision": vision}, prefix="model.architecture")


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule."""

    lr: float = bounded(5e-4, gt=0.0)
    weight_decay: float = bounded(0.2, ge=0.0)
    betas: tuple[float, float] = bounded((0.9, 0.98), ge=0.0, lt=1.0)
    eps: float = bounded(1e-6, gt=0.0)
    warmup_steps: int = bounded(0, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = bounded(0.0, ge=0.0, le=1.0)  # cosine floor, as a fraction of lr
    grad_clip_norm: float | None = bounded(None, gt=0.0)  # None: no clipping

    def __post_init__(self) -> None:
        check_ranges(self, "optim")  # also when built directly, not from a dict


@dataclass
class LossConfig:
    """Contrastive objective: ``clip`` (softmax), ``siglip`` (sigmoid with a learnable
    bias) or ``coca`` (softmax + captioning cross-entropy, as open_clip's ``CoCaLoss``, for a
    model with a text decoder); ``None`` picks the model's own: ``coca`` for a CoCa model,
    sigmoid for a model with a ``logit_bias`` (SigLIP), softmax otherwise. The two weights
    (open_clip's ``--coca-*-loss-weight`` defaults) apply to ``coca`` only."""

    kind: Literal["clip", "siglip", "coca"] | None = None
    local_loss: bool = False
    caption_loss_weight: float = bounded(2.0, ge=0.0)
    clip_loss_weight: float = bounded(1.0, ge=0.0)

    def __post_init__(self) -> None:
        check_ranges(self, "loss")


@dataclass
class LoraConfig:
    """LoRA fine-tuning (:func:`clipforge.lora.apply_lora`): adapters on the transformer
    blocks, everything else frozen except the parameters named in ``trainable`` (substrings;
    by default the temperature and, for SigLIP, the learnable bias). Checkpoints hold the
    merged weights, loadable as an ordinary model."""

    rank: int = bounded(8, ge=1)
    alpha: float = bounded(16.0, gt=0.0)
    dropout: float = bounded(0.0, ge=0.0, lt=1.0)
    targets: list[str] = field(default_factory=lambda: ["attn", "mlp"])
    towers: list[str] = field(default_factory=lambda: ["image", "text"])
    trainable: list[str] = field(default_factory=lambda: ["logit_scale", "logit_bias"])


@dataclass
class TrainConfig:
    """A whole training run. ``batch_size`` is global (all ranks, all micro-batches)."""

    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    steps: int = bounded(1000, ge=1)
    batch_size: int = bounded(256, ge=1)
    micro_batch_size: int | None = bounded(
        None, ge=1
    )  # per rank; < local batch → GradCache accumulation
    precision: Precision = "fp32"
    strategy: Literal["ddp", "fsdp"] = "ddp"  # multi-process: replicate, or shard (FSDP2)
    grad_checkpointing: bool = False
    compile: bool = False
    lock_image: bool = False
    lock_text: bool = False
    unlocked_last_n_layers: int = bounded(0, ge=0)  # LiT: blocks left trainable in locked towers
    patch_dropout: float = bounded(0.0, ge=0.0, lt=1.0)
    lora: LoraConfig | None = None  # LoRA fine-tuning instead of full training
    seed: int = 0
    output_dir: str = "runs/clipforge"
    checkpoint_every: int = bounded(1000, ge=1)
    keep_last: int = bounded(3, ge=1)
    eval_every: int = bounded(0, ge=0)  # 0: no evaluation
    eval_n_per_class: int = bounded(2, ge=1)  # the default procedural_zeroshot evaluation
    eval: list[EvalConfig] | None = None  # None: procedural_zeroshot on procedural data only
    log_every: int = bounded(10, ge=1)
    resume: str | None = None  # "latest" or a step_N directory
    device: str | None = None  # default: cuda if available
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        check_ranges(self)
        check_eval_list(self.eval)
        if self.lora is not None and (self.strategy == "fsdp" or self.resume is not None):
            raise ConfigError("lora: resuming and strategy=fsdp are not supported with LoRA yet")


# ----------------------------------------------------------------------------- public API
def config_from_dict(data: dict[str, Any], overrides: Sequence[str] = ()) -> TrainConfig:
    """A validated :class:`TrainConfig` from a raw dict plus ``key=value`` overrides."""
    data = _deep_copy(data or {})
    for override in overrides:
        apply_override(data, override, TrainConfig)
    data.setdefault("model", {})
    cfg = build(TrainConfig, data)
    _coerce_registry_options(cfg)
    return cfg


def _coerce_registry_options(cfg: TrainConfig) -> None:
    """Type-check the data-source and evaluator options (declared in their registries)."""
    cfg.data.coerce_options(coerce, "data")
    for i, entry in enumerate(cfg.eval or []):
        entry.coerce_options(coerce, f"eval[{i}]")


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML (or JSON) training config and apply ``a.b=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read config {path}: {err}") from err
        data = _read_mapping(text, path)
    return config_from_dict(data, overrides)


def _read_mapping(text: str, path: Path) -> dict[str, Any]:
    if path.suffix.lower() == ".json":

        data = json.loads(text)
    else:
        try:
            import yaml
        except ImportError as err:
            raise ConfigError("reading YAML configs needs PyYAML: pip install pyyaml") from err
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain-type dict of ``cfg`` (round-trips through :func:`config_from_dict`)."""
    return dataclasses.asdict(cfg)


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data
