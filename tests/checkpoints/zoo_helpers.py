"""Helpers of the open_clip zoo parity tests: reduced timm trunks registered for open_clip's
``TimmModel``, open_clip's parameter counts, and output dictionaries compared entry by entry."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import open_clip
import timm
import torch
from safetensors.torch import save_file
from timm.models import register_model

from ..conftest import max_diff

#: what timm's ``create_model`` passes a model function besides the model's own arguments
_HUB_PLUMBING = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def register_timm_trunk(timm_name: str, make: Callable[..., torch.nn.Module]) -> None:
    """Register ``make(**kwargs)`` in timm as ``timm_name`` (once), so open_clip's
    ``TimmModel`` builds its own head around the trunk as it does for the full-size one."""
    if timm_name in timm.list_models(timm_name):
        return

    def build(pretrained: bool = False, **kwargs) -> torch.nn.Module:
        model = make(**{k: v for k, v in kwargs.items() if k not in _HUB_PLUMBING})
        model.default_cfg = model.pretrained_cfg = {}
        return model

    build.__name__ = timm_name
    register_model(build)


def open_clip_counts(name: str) -> dict[str, int]:
    """open_clip's ``{"image", "text", "total"}`` parameter counts of ``name`` (meta device;
    ``text`` leaves out the logit scale)."""
    with torch.device("meta"):
        ref = open_clip.create_model(name, device="meta")
    total = sum(p.numel() for p in ref.parameters())
    image = sum(p.numel() for p in ref.visual.parameters())
    return {"image": image, "text": total - image - 1, "total": total}


def assert_same_outputs(got: dict, want: dict, tol: float) -> None:
    """The same keys; every tensor (each of a list's, in order) the same shape within ``tol``."""
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        pairs = zip(got[key], value, strict=True) if isinstance(value, list) else [(got[key], value)]
        assert not isinstance(value, list) or len(value) >= 1, key
        for g, w in pairs:
            assert g.shape == w.shape and max_diff(g, w) <= tol, key


def write_open_clip_hub(directory: Path, model_cfg: dict, ref: torch.nn.Module) -> dict:
    """An open_clip hub directory of ``ref`` (config + safetensors) in ``directory``; the
    state dict written."""
    directory.mkdir()
    (directory / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(state, str(directory / "open_clip_model.safetensors"))
    return state


def assert_same_embeddings(model, ref, images: torch.Tensor, tokens: torch.Tensor, tol: float):
    """Both models' image and text embeddings within ``tol``."""
    with torch.no_grad():
        assert max_diff(model.encode_image(images), ref.encode_image(images)) <= tol
        assert max_diff(model.encode_text(tokens), ref.encode_text(tokens)) <= tol


def checkpointed_image_pass(model, images: torch.Tensor, tol: float) -> torch.Tensor:
    """``model`` in training with gradient checkpointing: its image embedding (differentiable),
    asserted equal (within ``tol``) to the one without checkpointing."""
    model.train()
    plain = model.encode_image(images).detach()
    model.set_grad_checkpointing(True)
    out = model.encode_image(images)
    assert max_diff(out.detach(), plain) <= tol
    return out
