"""``clipforge selfcheck``'s check on reduced twins of the MetaCLIP 2 worldwide family (its
XLM-V tokenizer named but not cached: no network needed) and of a SigLIP 2 NaFlex tower."""

from __future__ import annotations

import math

import pytest

from clipforge.configs import get_config, get_tokenizer_source, register_architecture
from clipforge.configs.registry import ARCHITECTURES
from clipforge.selfcheck import check_architecture


@pytest.fixture(autouse=True)
def _unregister():
    """Leave no test architecture behind (other tests list every registered one)."""
    before = set(ARCHITECTURES.names())
    yield
    for name in set(ARCHITECTURES.names()) - before:
        ARCHITECTURES.unregister(name)


def _reduced(name: str) -> dict:
    data = get_config(name).to_dict()
    data["tokenizer"] = get_tokenizer_source(name)
    data["embed_dim"] = 32
    data["vision"].update(image_size=28, width=32, layers=1, heads=2)
    data["text"].update(vocab_size=500, width=32, layers=1, heads=2, context_length=12)
    return data


@pytest.mark.parametrize("name", ["ViT-H-14-worldwide", "ViT-L-14-worldwide-quickgelu"])
def test_worldwide_twin_builds_and_runs_offline(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    data = _reduced(name)
    assert data["tokenizer"]["kind"] == "hf"
    check = check_architecture(register_architecture(data, name=f"selfcheck-{name}-tiny"))
    assert check.embed_dim == 32 and math.isfinite(check.cosine)


def test_naflex_tower_builds_and_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    tiny = {
        "embed_dim": 32, "norm_eps": 1e-6, "init_logit_bias": -10,
        "vision": {"type": "siglip_naflex", "image_size": 32, "patch_size": 8, "width": 32,
                   "layers": 1, "heads": 2},
        "text": {"type": "siglip_text", "context_length": 8, "vocab_size": 64, "width": 32,
                 "heads": 2, "layers": 1},
        "tokenizer": {"kind": "sentencepiece", "hub_id": "nobody/not-cached-tokenizer"},
    }  # fmt: skip
    check = check_architecture(register_architecture(tiny, name="selfcheck-naflex-tiny"))
    assert check.embed_dim == 32 and math.isfinite(check.cosine)
