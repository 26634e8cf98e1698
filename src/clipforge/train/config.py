"""Typed training configuration, loaded from YAML with ``a.b=value`` overrides.

Every section is a dataclass; unknown keys are an error that names the key and lists the
valid ones, and values are coerced to the declared types (``"1e-3"`` → ``0.001``,
``"true"`` → ``True``, ``"0.9,0.98"`` → ``(0.9, 0.98)``). Dict-typed fields
(``data.options``, an inline ``model.architecture``) accept any sub-keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..configs import ConfigError

__all__ = [
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config",
]

Precision = Literal["fp32", "bf16", "fp16"]


@dataclass
class ModelConfig:
    """What to train: a named or inline architecture, or a checkpoint to fine-tune from."""

    architecture: str | dict[str, Any] | None = None  # name, or a ClipConfig dict
    init_from: str | None = None  # checkpoint path/dir (anything clipforge.load reads)
    pretrained: str | None = None  # registered tag for a named architecture
    activation: Literal["gelu", "quick_gelu"] | None = None

    def __post_init__(self) -> None:
        if self.architecture is None and self.init_from is None:
            raise ConfigError("model: set 'model.architecture' or 'model.init_from'")


@dataclass
class DataConfig:
    """Where batches come from; ``kind`` selects a builder in ``data.loader.DATASET_BUILDERS``."""

    kind: str = "procedural"  # "procedural" | "csv" | "folder" | "webdataset"
    path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    image_size: int | None = None  # source image size (procedural); None: the model's
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule."""

    lr: float = 5e-4
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 0
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of lr
    grad_clip_norm: float | None = None

    def __post_init__(self) -> None:
        """Range-check every numeric setting, naming the key (before anything is built)."""
        import math

        checks: list[tuple[str, float, bool, str]] = [
            ("lr", self.lr, self.lr > 0, "> 0"),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0, ">= 0"),
            ("eps", self.eps, self.eps > 0, "> 0"),
            ("warmup_steps", self.warmup_steps, self.warmup_steps >= 0, ">= 0"),
            ("min_lr_ratio", self.min_lr_ratio, 0 <= self.min_lr_ratio <= 1, "in [0, 1]"),
        ]
        checks += [
            (f"betas[{i}]", beta, 0 <= beta < 1, "in [0, 1)") for i, beta in enumerate(self.betas)
        ]
        if self.grad_clip_norm is not None:
            clip = self.grad_clip_norm
            checks.append(("grad_clip_norm", clip, clip > 0, "> 0 (or null: no clipping)"))
        for key, value, ok, expected in checks:
            if not (ok and math.isfinite(value)):  # NaN fails every comparison
                raise ConfigError(f"optim.{key} must be {expected}, got {value}")


@dataclass
class LossConfig:
    """Contrastive objective."""

    kind: Literal["clip", "siglip"] = "clip"
    local_loss: bool = False


@dataclass
class TrainConfig:
    """A whole training run. ``batch_size`` is global (all ranks, all micro-batches)."""

    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    steps: int = 1000
    batch_size: int = 256
    micro_batch_size: int | None = None  # per rank; < local batch → GradCache accumulation
    precision: Precision = "fp32"
    grad_checkpointing: bool = False
    compile: bool = False
    lock_image: bool = False
    lock_text: bool = False
    unlocked_last_n_layers: int = 0  # LiT: blocks left trainable in locked towers
    patch_dropout: float = 0.0
    seed: int = 0
    output_dir: str = "runs/clipforge"
    checkpoint_every: int = 1000
    keep_last: int = 3
    eval_every: int = 0  # 0: no zero-shot evaluation
    eval_n_per_class: int = 2
    log_every: int = 10
    resume: str | None = None  # "latest" or a step_N directory
    device: str | None = None  # default: cuda if available
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        positive = {"steps": self.steps, "batch_size": self.batch_size, "log_every": self.log_every}
        positive.update(checkpoint_every=self.checkpoint_every, keep_last=self.keep_last)
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ConfigError(f"micro_batch_size must be >= 1, got {self.micro_batch_size}")
        if not 0.0 <= self.patch_dropout < 1.0:
            raise ConfigError(f"patch_dropout must be in [0, 1), got {self.patch_dropout}")
        if self.unlocked_last_n_layers < 0 or self.eval_every < 0:
            raise ConfigError("unlocked_last_n_layers and eval_every must be >= 0")


# ----------------------------------------------------------------------------- coercion
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _type_error(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"config key '{key}': expected {expected}, got {value!r}")


def _coerce_scalar(value: Any, tp: type, key: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str | int) and str(value).strip().lower() in _TRUE | _FALSE:
            return str(value).strip().lower() in _TRUE
        raise _type_error(key, value, "a boolean")
    if tp is int:
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or not number.is_integer():
            raise _type_error(key, value, "an integer")
        return int(number)
    if tp is float:
        try:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        except (TypeError, ValueError):
            raise _type_error(key, value, "a number") from None
    if tp is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise _type_error(key, value, "a string")
    if tp is dict or tp is Any:
        if tp is dict and not isinstance(value, dict):
            raise _type_error(key, value, "a mapping")
        return value
    raise ConfigError(f"config key '{key}': unsupported type {tp}")  # pragma: no cover


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null"))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` converted to the annotated type ``tp`` (or a ConfigError naming ``key``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if _is_none(value) and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return _coerce(value, option, key)
            except ConfigError:
                if len(options) == 1:
                    raise
        names = [getattr(a, "__name__", str(a)) for a in args]
        raise ConfigError(f"config key '{key}': {value!r} matches none of the types {names}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.strip("()[] ").split(",")]
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise _type_error(key, value, f"a list of {len(args)} values")
        return tuple(
            _coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict:
        return _coerce_scalar(value, dict, key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    return _coerce_scalar(value, tp, key)


def _unknown_key(prefix: str, key: str, valid: list[str]) -> ConfigError:
    name = f"{prefix}.{key}" if prefix else key
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    where = f"under '{prefix}'" if prefix else "at the top level"
    return ConfigError(f"unknown config key '{name}'{hint}; valid keys {where}: {valid}")


def _build(cls: type, data: Any, prefix: str = "") -> Any:
    """Instantiate dataclass ``cls`` from a dict, checking keys and coercing values."""
    if not isinstance(data, dict):
        raise _type_error(prefix or "<root>", data, "a mapping")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in valid:
            raise _unknown_key(prefix, str(key), valid)
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"{prefix or 'config'}: {err}") from None


# ----------------------------------------------------------------------------- overrides
def _parse_value(text: str) -> Any:
    try:
        import yaml

        return yaml.safe_load(text) if text.strip() else ""
    except ImportError:  # pragma: no cover - PyYAML is optional
        import json

        try:
            return json.loads(text)
        except ValueError:
            return text
    except Exception:  # noqa: BLE001 - a malformed YAML scalar: keep the raw string
        return text


def _dict_field(cls: type, name: str) -> bool:
    tp = typing.get_type_hints(cls)[name]
    options = (
        typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    )
    return any(o is dict or typing.get_origin(o) is dict for o in options)


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in the raw config dict, validating the key path."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not of the form key=value")
    dotted, raw = override.split("=", 1)
    parts = [p for p in dotted.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {override!r} has an empty key")
    node, cls = data, TrainConfig
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[:depth])
        last = depth == len(parts) - 1
        if cls is not None:
            valid = [f.name for f in dataclasses.fields(cls)]
            if part not in valid:
                raise _unknown_key(prefix, part, valid)
        if last:
            node[part] = _parse_value(raw)
            return
        hint = typing.get_type_hints(cls)[part] if cls is not None else None
        child_cls = hint if hint is not None and dataclasses.is_dataclass(hint) else None
        if cls is not None and child_cls is None and not _dict_field(cls, part):
            raise ConfigError(f"config key '{'.'.join(parts[: depth + 1])}' has no sub-keys")
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node, cls = node[part], child_cls


# ----------------------------------------------------------------------------- public API
def config_from_dict(data: dict[str, Any], overrides: Sequence[str] = ()) -> TrainConfig:
    """A validated :class:`TrainConfig` from a raw dict plus ``key=value`` overrides."""
    data = _deep_copy(data or {})
    for override in overrides:
        apply_override(data, override)
    data.setdefault("model", {})
    return _build(TrainConfig, data)


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
        import json

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
