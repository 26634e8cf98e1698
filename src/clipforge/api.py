"""The public entry points: create, load and save CLIP models."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .checkpoints import (
    HubTokenizer,
    apply_state,
    download_tokenizer,
    download_weights,
    get_format,
    get_pretrained,
    infer_config,
    read_checkpoint,
    release_tokenizer,
    select_towers,
)
from .checkpoints.errors import CheckpointError
from .checkpoints.fit import check_fits
from .checkpoints.formats import LoadedCheckpoint, list_formats
from .checkpoints.torchscript import is_torchscript_archive
from .configs import ClipConfig, get_config, get_preprocess, get_tokenizer_source, is_architecture
from .configs.registry import is_architecture_file, resolve_architecture_name
from .errors import UsageError
from .models import CLIP
from .models.clip import Towers
from .models.factory import build_model
from .preprocess import PreprocessConfig
from .tokenizer.files import save_tokenizer

SaveFormat = str  # a registered checkpoint format name: see clipforge.checkpoints.list_formats()


def create_model(
    architecture: str | ClipConfig,
    towers: Towers = "both",
    activation: str | None = None,
    preprocess: PreprocessConfig | None = None,
) -> CLIP:
    """A randomly initialised model of a named architecture (or an explicit config).

    A named architecture preprocesses and tokenizes as its family does (SigLIP: squash
    resize, mean/std 0.5, its SentencePiece vocabulary fetched from the hub on first
    ``tokenize``) unless ``preprocess`` says otherwise; a bare config, as OpenAI's CLIP.
    """
    cfg = get_config(architecture) if isinstance(architecture, str) else architecture
    if preprocess is None and isinstance(architecture, str):
        preprocess = _architecture_preprocess(architecture)
    if activation is not None:
        cfg = cfg.replace(activation=activation)
    model = build_model(cfg, towers=towers, preprocess_config=preprocess)
    if isinstance(architecture, str):
        _set_family_tokenizer(model, architecture)
    return model


def load(
    name_or_path: str | Path | ClipConfig,
    weights: str | Path | None = None,
    pretrained: str | None = None,
    towers: Towers = "both",
    activation: str | None = None,
    device: str | torch.device | None = None,
    cache_dir: str | Path | None = None,
    trust_pickle: bool = False,
    max_parameters: int | None = None,
) -> CLIP:
    """Load a model from a checkpoint in any supported format.

    - ``load("ViT-B-32", weights="file.pt")``: a named architecture with local weights
      (OpenAI TorchScript or state dict, open_clip ``.pt``/``.bin``/``.safetensors``, ...).
    - ``load("path/to/dir")`` or ``load("file.safetensors")``: architecture read from the
      directory's config or inferred from the weights' shapes.
    - ``load(ClipConfig(...), weights="file.pt")``: a custom architecture.
    - ``load("ViT-B-32", pretrained="openai")``: a registered checkpoint from the hub (cached).
    - ``load("runs/demo")`` or ``load("runs/demo/latest")``: the newest intact checkpoint of
      a training run.

    ``activation`` overrides GELU/QuickGELU (weights do not record it); the model is
    returned in eval mode, fp32. Before any weight is allocated the config is checked
    against the checkpoint (a model built on the ``meta`` device) and against a parameter
    cap (``max_parameters``; default 5e9 or ``$CLIPFORGE_MAX_PARAMETERS``):
    :class:`~clipforge.checkpoints.CheckpointError` names the file otherwise.
    """
    name = name_or_path if isinstance(name_or_path, ClipConfig) else str(name_or_path)
    preprocess, tokenizer_dir, architecture, tokenizer_source = None, None, None, None
    if pretrained is not None:
        if not isinstance(name, str):
            raise UsageError("pretrained=... needs an architecture name")
        entry = get_pretrained(name, pretrained)
        weights = download_weights(entry, cache_dir)
        tokenizer_dir = download_tokenizer(entry, cache_dir)
        tokenizer_source = entry.tokenizer
        activation = activation or entry.activation
        preprocess = _architecture_preprocess(name, entry.preprocess)
    if weights is not None:
        cfg = get_config(name) if isinstance(name, str) else name
        ckpt = read_checkpoint(weights, trust_pickle)
        preprocess = preprocess or ckpt.preprocess
        architecture = name if isinstance(name, str) and is_architecture(name) else None
        if preprocess is None and architecture is not None:
            preprocess = _architecture_preprocess(architecture)
        activation = activation or _activation_hint(weights)
    elif isinstance(name_or_path, ClipConfig):
        raise UsageError("load(config) needs weights=...; use create_model(config) for random init")
    else:
        ckpt = read_checkpoint(name_or_path, trust_pickle)
        cfg = ckpt.config or _infer(ckpt)
        preprocess = preprocess or ckpt.preprocess
        activation = activation or _activation_hint(name_or_path)
    state = select_towers(ckpt.state, towers)
    check_fits(cfg, state, ckpt.config_source or ckpt.source, towers, max_parameters)
    model = create_model(cfg, towers=towers, activation=activation, preprocess=preprocess)
    apply_state(model, state, ckpt.source)
    _attach_tokenizer(model, ckpt, tokenizer_dir, architecture, tokenizer_source)
    return model.to(device).eval() if device is not None else model.eval()


def _attach_tokenizer(
    model: CLIP,
    ckpt: LoadedCheckpoint,
    tokenizer_dir: Path | None,
    architecture: str | None,
    source: dict[str, str] | None = None,
) -> None:
    """The checkpoint's own tokenizer (e.g. a SigLIP SentencePiece vocabulary), else the
    pretrained release's (from its hub repository), else the named architecture's family
    tokenizer; CLIP's BPE when none applies."""
    if ckpt.tokenizer is not None:
        model.set_tokenizer(ckpt.tokenizer)
    elif tokenizer_dir is not None:
        context = model.config.text.context_length
        model.set_tokenizer(release_tokenizer(tokenizer_dir, context, source))
    elif architecture is not None:
        _set_family_tokenizer(model, architecture)


def load_spec(
    model: str, weights: str | Path | None = None, pretrained: str | None = None
) -> CLIP:
    """A model named the way the command line names one (``--model/--weights/--pretrained``).

    An architecture (name or JSON file) alone gives its *random* model, seeded with 0 so
    every call builds the same weights (the global RNG is left untouched); with
    ``weights`` or ``pretrained``, or a checkpoint path as ``model``, :func:`load`.
    """
    arch = model if is_architecture_file(model) else resolve_architecture_name(model)
    if weights is None and pretrained is None and arch is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return create_model(arch).eval()
    return load(arch or model, weights=weights, pretrained=pretrained)


def _architecture_preprocess(name: str, overrides: dict | None = None) -> PreprocessConfig:
    """The preprocessing an architecture declares, with a pretrained entry's ``overrides``."""
    fields = {**get_preprocess(name), **(overrides or {})}
    return PreprocessConfig.from_dict(
        {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    )


def _set_family_tokenizer(model: CLIP, architecture: str) -> None:
    """Give ``model`` its family's tokenizer (fetched on first use), if the family has one."""
    source = get_tokenizer_source(architecture)
    if source is not None:
        context = model.config.text.context_length
        model.set_tokenizer(HubTokenizer(architecture, source, context))


def _infer(ckpt: LoadedCheckpoint) -> ClipConfig:
    """The architecture inferred from the weights, errors naming the file."""
    try:
        return infer_config(ckpt.state)
    except CheckpointError as err:
        raise CheckpointError(f"{ckpt.source}: {err}") from err


def _activation_hint(path: str | Path) -> str | None:
    """OpenAI's TorchScript releases were all trained with QuickGELU."""

    path = Path(path)
    return "quick_gelu" if path.is_file() and is_torchscript_archive(path) else None


def save(model: CLIP, directory: str | Path, format: SaveFormat = "clipforge") -> Path:
    """Write a hub-layout directory loadable by clipforge and by the target library.

    ``format`` names a registered checkpoint format (``clipforge``, ``hf``, ``open_clip``,
    or one added with :func:`clipforge.checkpoints.register_format`); it is checked before
    anything is written, and each file is written atomically.
    """
    fmt = get_format(format)
    if fmt.write_dir is None:
        savable = ", ".join(repr(n) for n in list_formats(savable=True))
        raise CheckpointError(f"format {format!r} has no directory layout; use one of {savable}")
    if model.towers != "both":
        raise CheckpointError("only a model with both towers can be saved")
    directory = Path(directory)
    # write_dir converts config and keys first (and may refuse), then copies tensors out.
    fmt.write_dir(model.config, model.preprocess_config, model.state_dict(), directory)
    write_model_tokenizer(model, directory)
    return directory


def write_model_tokenizer(model: CLIP, directory: Path) -> None:
    """Write the model's own tokenizer files beside its weights (a SigLIP checkpoint's
    ``tokenizer.json``; nothing for CLIP's bundled BPE), so that loading restores it."""
    try:
        tokenizer = model.get_tokenizer()
    except ValueError:  # a tower that needs its own vocabulary, and the model has none
        return
    try:
        if isinstance(tokenizer, HubTokenizer):  # a family vocabulary: its files, once fetched
            tokenizer = tokenizer.resolved()
        save_tokenizer(tokenizer, directory)
    except (ValueError, CheckpointError) as err:
        warnings.warn(f"{directory}: the model's tokenizer was not saved: {err}", stacklevel=3)


__all__ = ["create_model", "load", "save"]
