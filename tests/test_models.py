"""Model behaviour: API shapes, normalisation, exact text-padding trimming, towers."""

from __future__ import annotations

import pytest
import torch

import clipforge

from .conftest import perturb_


@pytest.fixture(scope="module")
def model() -> clipforge.CLIP:
    torch.manual_seed(0)
    return perturb_(clipforge.create_model("ViT-S-32")).eval()


def test_encoders_shapes_and_normalisation(model):
    pixels = torch.randn(3, 3, 224, 224)
    tokens = model.tokenize(["a photo of a cat", "a dog", ""])
    assert tokens.shape == (3, 77) and tokens.dtype == torch.int64
    with torch.no_grad():
        image = model.encode_image(pixels, normalize=True)
        text = model.encode_text(tokens, normalize=True)
        raw = model.encode_text(tokens)
    assert image.shape == (3, 384) and text.shape == (3, 384)
    assert torch.allclose(image.norm(dim=-1), torch.ones(3), atol=1e-6)
    assert torch.allclose(text, raw / raw.norm(dim=-1, keepdim=True), atol=1e-6)


def test_trimming_text_padding_is_exact(model):
    """Running the causal tower only up to the longest EOT equals the full-length run.

    In float64 the two agree to ~1e-15 (the maths is identical; only kernel blocking
    differs), which proves exactness; fp32 agrees within the parity tolerance.
    """
    tokens = model.tokenize(["a", "a photo of a big red dog on the grass", "x " * 100])
    text64 = clipforge.create_model("ViT-S-32", towers="text").double().eval()
    text64.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.startswith("visual.")}
    )
    with torch.no_grad():
        for batch in (tokens, tokens[:2], tokens[:1]):
            trimmed = text64.text(batch, trim_padding=True)
            full = text64.text(batch, trim_padding=False)
            assert (trimmed - full).abs().max() < 1e-12
            assert (model.text(batch) - model.text(batch, trim_padding=False)).abs().max() < 1e-5


def test_logit_scale_init_and_forward(model):
    fresh = clipforge.create_model("ViT-S-32")
    assert abs(fresh.logit_scale.exp().item() - 1 / 0.07) < 1e-4
    image, text, scale = model(torch.randn(2, 3, 224, 224), model.tokenize(["a", "b"]))
    assert image.shape == text.shape == (2, 384) and scale.ndim == 0


def test_quick_gelu_changes_the_function():
    torch.manual_seed(0)
    gelu = perturb_(clipforge.create_model("ViT-S-32")).eval()
    quick = clipforge.create_model("ViT-S-32", activation="quick_gelu").eval()
    quick.load_state_dict(gelu.state_dict())
    tokens = gelu.tokenize(["hello"])
    with torch.no_grad():
        assert not torch.allclose(gelu.encode_text(tokens), quick.encode_text(tokens))


def test_too_long_tokens_are_rejected(model):
    with pytest.raises(ValueError, match="exceed the model's context length"):
        model.encode_text(torch.zeros(1, 78, dtype=torch.long))
