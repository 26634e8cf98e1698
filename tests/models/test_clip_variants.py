"""The CLIP variants of LAION, MetaCLIP, DFN and the rest of open_clip's plain CLIP configs:
each built-in architecture has open_clip's parameter counts and activation, and the
published profile's where listed (family representatives fast, the rest in the slow tier)."""

from __future__ import annotations

import csv
import functools

import open_clip
import pytest
import torch

import clipforge
from clipforge.configs import ResNetConfig, TextConfig, ViTConfig

from ..conftest import shared_path, tiered

#: CLIP towers on both sides (the HF text towers' models are counted in
#: tests/models/test_hf_text_architectures.py: open_clip needs hub configs to build them)
CLIP_FAMILY = [
    n for n in clipforge.list_architectures()
    if isinstance(clipforge.get_config(n).vision, ViTConfig | ResNetConfig)
    and isinstance(clipforge.get_config(n).text, TextConfig)
]  # fmt: skip
#: the releases issue 10 names (LAION, MetaCLIP, DFN, OpenAI QuickGELU variants)
REQUIRED = {"ViT-B-16-quickgelu", "ViT-L-14-quickgelu", "ViT-H-14-quickgelu",
            "ViT-H-14-378-quickgelu", "ViT-bigG-14", "RN50-quickgelu", "RN101-quickgelu"}  # fmt: skip


@functools.cache
def _profile() -> dict[str, dict[str, str]]:
    with shared_path("reference", "model_profile.csv").open() as f:
        return {row["model"]: row for row in csv.DictReader(f)}


def test_the_named_releases_and_every_plain_open_clip_config_are_built_in():
    assert set(CLIP_FAMILY) >= REQUIRED
    plain = {
        n for n in open_clip.list_models()
        if not (cfg := open_clip.get_model_config(n)).get("custom_text")
        and not {"timm_model_name", "no_ln_pre", "attentional_pool", "ls_init_value"}
        & set(cfg.get("vision_cfg", {}))
        and cfg.get("text_cfg", {}).get("vocab_size", 49408) == 49408
        and "hf_tokenizer_name" not in cfg.get("text_cfg", {})
    }  # fmt: skip
    assert plain <= set(CLIP_FAMILY), sorted(plain - set(CLIP_FAMILY))


@pytest.mark.parametrize("name", tiered(CLIP_FAMILY))
def test_counts_and_activation_equal_open_clip(name):
    with torch.device("meta"):
        ours = clipforge.create_model(name).num_parameters()
        ref = open_clip.create_model(name, device="meta")
    total = sum(p.numel() for p in ref.parameters())
    image = sum(p.numel() for p in ref.visual.parameters())
    assert ours == {"image": image, "text": total - image - 1, "total": total}
    quick = bool(open_clip.get_model_config(name).get("quick_gelu"))
    assert clipforge.get_config(name).activation == ("quick_gelu" if quick else "gelu")
    profile = _profile().get(name)
    if profile is not None:
        assert round(ours["total"] / 1e6, 2) == float(profile["mparams"])
        assert round(ours["image"] / 1e6, 2) == float(profile["image_mparams"])
