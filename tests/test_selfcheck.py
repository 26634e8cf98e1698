"""``clipforge.selfcheck``: the model-zoo smoke test as a library call, the CLI only prints it."""

from __future__ import annotations

import math

import torch
from typer.testing import CliRunner

from clipforge.cli import app
from clipforge.configs import get_config, register_architecture
from clipforge.configs.param_counts import count_parameters
from clipforge.selfcheck import check_architecture

TINY = {
    "embed_dim": 16,
    "vision": {"type": "vit", "image_size": 32, "patch_size": 16, "width": 32, "layers": 1,
               "heads": 2},
    "text": {"width": 32, "heads": 2, "layers": 1},
}  # fmt: skip
# conftest's tiny_vit_config: wide enough for int8's error to stay below 1 % (width 32 is not)
TINY_INT8 = {
    "embed_dim": 32,
    "vision": {**TINY["vision"], "patch_size": 8, "width": 64, "layers": 2},
    "text": {"width": 64, "heads": 2, "layers": 2},
}


def test_check_architecture_reports_counts_and_finite_outputs():
    name = register_architecture(TINY, name="selfcheck-tiny", replace=True)
    check = check_architecture(name)
    assert check.parameters == count_parameters(get_config(name))
    assert check.embed_dim == 16 and -1.0 <= check.cosine <= 1.0 and math.isfinite(check.cosine)
    assert check.build_seconds >= 0 and check.image_ms > 0 and check.text_ms > 0


def test_selfcheck_cli_prints_the_table_and_refuses_unknown_names():
    register_architecture(TINY, name="selfcheck-tiny", replace=True)
    result = CliRunner().invoke(app, ["selfcheck", "selfcheck-tiny"])
    assert result.exit_code == 0, result.output
    assert (
        "selfcheck-tiny" in result.output and "all 1 architectures built and ran" in result.output
    )
    bad = CliRunner().invoke(app, ["selfcheck", "ViT-B-33"])
    assert bad.exit_code == 2 and "unknown architecture ViT-B-33" in bad.output


def test_check_architecture_needs_no_network_for_a_hub_tokenizer(tmp_path, monkeypatch):
    """A SigLIP-family name whose vocabulary is not cached: the towers are still checked."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    tiny = {
        "embed_dim": 32, "norm_eps": 1e-6, "init_logit_bias": -10,
        "vision": {"type": "siglip_vit", "image_size": 32, "patch_size": 16, "width": 32,
                   "layers": 1, "heads": 2},
        "text": {"type": "siglip_text", "context_length": 8, "vocab_size": 64, "width": 32,
                 "heads": 2, "layers": 1},
        "tokenizer": {"kind": "sentencepiece", "hub_id": "nobody/not-cached-tokenizer"},
    }  # fmt: skip
    check = check_architecture(register_architecture(tiny, name="selfcheck-siglip-tiny"))
    assert check.embed_dim == 32 and math.isfinite(check.cosine) and check.text_ms > 0


def test_selfcheck_at_int8_runs_the_quantised_model():
    """int8 is not autocast's no-op: the int8 copy runs (other outputs, close to fp32's)."""
    name = register_architecture(TINY_INT8, name="selfcheck-int8-tiny", replace=True)
    fp32 = check_architecture(name)
    int8 = check_architecture(name, precision="int8")
    assert fp32.quantization is None and int8.quantization is not None
    assert int8.quantization["precision"] == "int8"
    assert int8.quantization["modules"]["int8_linear"] > 0
    assert int8.quantization["modules"]["float_linear"] == 0
    assert int8.parameters == fp32.parameters
    for a, b in ((fp32.image, int8.image), (fp32.text, int8.text)):
        assert not torch.equal(a, b)
        assert torch.nn.functional.cosine_similarity(a, b).min().item() >= 0.99


def test_selfcheck_cli_int8_prints_the_int8_cosine():
    register_architecture(TINY_INT8, name="selfcheck-int8-tiny", replace=True)
    result = CliRunner().invoke(app, ["selfcheck", "selfcheck-int8-tiny", "--precision", "int8"])
    assert result.exit_code == 0, result.output
    assert "int8 cos" in result.output and "all 1 architectures built and ran" in result.output
