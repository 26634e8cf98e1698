"""open_clip's whole zoo: every entry of ``open_clip.list_models()`` is a clipforge
architecture with open_clip's parameter counts, or is in :data:`NOT_BUILT` with the reason.

The fast tier checks the coverage and, without building anything, clipforge's parameter
formula against open_clip's published counts (``../shared/reference/model_profile.csv``,
in millions to two decimals) for every architecture the profile lists; the exact counts
of both libraries' models built on the meta device run for family representatives in the
fast tier and for every architecture in the slow tier.
"""

from __future__ import annotations

import csv
import functools

import open_clip
import pytest
import torch

import clipforge
from clipforge.configs.param_counts import count_parameters

from ..conftest import shared_path

ZOO = open_clip.list_models()
#: open_clip architectures clipforge does not build yet, each with the reason. Empty: every
#: entry of open_clip.list_models() is built (kept so a new open_clip release shows up here)
NOT_BUILT: dict[str, str] = {}
BUILT = [n for n in ZOO if n not in NOT_BUILT]
#: open_clip builds these text towers from a transformers config fetched from the hub, which
#: cannot happen offline: their counts are checked against the published profile (every one
#: is in it, asserted below) and by tests/models/test_hf_text_architectures.py
NEEDS_HUB = frozenset(
    n for n in BUILT if (open_clip.get_model_config(n) or {}).get("text_cfg", {}).get("hf_model_name")
)
#: one per tower family, exact meta-device counts in the fast tier
REPRESENTATIVES = frozenset(
    {"ViT-B-32", "RN50", "ViT-B-16-SigLIP2", "EVA02-B-16", "convnext_base_w", "PE-Core-T-16-384",
     "vit_relpos_medium_patch16_cls_224", "MobileCLIP2-S0", "ViTamin-S", "ViT-M-16-alt",
     "ViT-L-14-CLIPA", "swin_base_patch4_window7_224", "coca_ViT-B-32"}
)  # fmt: skip


@functools.cache
def _profile() -> dict[str, dict[str, str]]:
    with shared_path("reference", "model_profile.csv").open() as f:
        return {row["model"]: row for row in csv.DictReader(f)}


def test_every_open_clip_architecture_is_built_or_listed_with_a_reason():
    have = set(clipforge.list_architectures())
    missing = [n for n in ZOO if n not in have and n not in NOT_BUILT]
    assert not missing, f"neither built nor listed in NOT_BUILT: {missing}"
    stale = [n for n in NOT_BUILT if n in have]
    assert not stale, f"built now, remove from NOT_BUILT: {stale}"
    assert set(NOT_BUILT) <= set(ZOO), "NOT_BUILT names an architecture open_clip lacks"
    assert all(reason.startswith(("pending: ", "not yet: ")) for reason in NOT_BUILT.values())
    assert set(_profile()) >= NEEDS_HUB, "a hub-config architecture without published counts"


@pytest.mark.parametrize("name", [n for n in BUILT if n in _profile()])
def test_parameter_formula_equals_open_clips_published_counts(name):
    counts = count_parameters(clipforge.get_config(name))
    row = _profile()[name]
    published = {"image": "image_mparams", "text": "text_mparams", "total": "mparams"}
    for key, column in published.items():
        assert round(counts[key] / 1e6, 2) == float(row[column]), (key, counts[key], row[column])


@pytest.mark.parametrize(
    "name",
    [
        n if n in REPRESENTATIVES else pytest.param(n, marks=pytest.mark.slow)
        for n in BUILT
        if n not in NEEDS_HUB
    ],
)
def test_built_parameter_counts_equal_open_clips(name):
    with torch.device("meta"):
        ours = clipforge.create_model(name)
        ref = open_clip.create_model(name, device="meta")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    image, total = count(ref.visual), count(ref)
    scalars = sum(p.numel() for n, p in ref.named_parameters() if n.startswith("logit_"))
    expected = {"image": image, "text": total - image - scalars, "total": total}
    if hasattr(ref, "text_decoder"):  # CoCa: the captioning decoder is counted on its own
        expected["decoder"] = count(ref.text_decoder)
        expected["text"] -= expected["decoder"]
    assert ours.num_parameters() == expected
    assert count_parameters(clipforge.get_config(name)) == expected
