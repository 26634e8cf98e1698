"""Model behaviour: API shapes, normalisation, exact text-padding trimming, towers."""

from __future__ import annotations

import pytest
import torch

import clipforge

from ..conftest import perturb_, tiny_vit_config

TINY = tiny_vit_config()  # a ViT CLIP with the 77-token text tower, at 1/1000 of ViT-S-32
SIZE, DIM = TINY.vision.image_size, TINY.embed_dim


@pytest.fixture(scope="module")
def model() -> clipforge.CLIP:
    torch.manual_seed(0)
    return perturb_(clipforge.create_model(TINY)).eval()


def test_encoders_shapes_and_normalisation(model):
    pixels = torch.randn(3, 3, SIZE, SIZE)
    tokens = model.tokenize(["a photo of a cat", "a dog", ""])
    assert tokens.shape == (3, 77) and tokens.dtype == torch.int64
    with torch.no_grad():
        image = model.encode_image(pixels, normalize=True)
        text = model.encode_text(tokens, normalize=True)
        raw = model.encode_text(tokens)
    assert image.shape == (3, DIM) and text.shape == (3, DIM)
    assert torch.allclose(image.norm(dim=-1), torch.ones(3), atol=1e-6)
    assert torch.allclose(text, raw / raw.norm(dim=-1, keepdim=True), atol=1e-6)


def test_trimming_text_padding_is_exact(model):
    """Running the causal tower only up to the longest EOT equals the full-length run.

    In float64 the two agree to ~1e-15 (the maths is identical; only kernel blocking
    differs), which proves exactness; fp32 agrees within the parity tolerance.
    """
    tokens = model.tokenize(["a", "a photo of a big red dog on the grass", "x " * 100])
    text64 = clipforge.create_model(TINY, towers="text").double().eval()
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
    fresh = clipforge.create_model(TINY)
    assert abs(fresh.logit_scale.exp().item() - 1 / 0.07) < 1e-4
    image, text, scale = model(torch.randn(2, 3, SIZE, SIZE), model.tokenize(["a", "b"]))
    assert image.shape == text.shape == (2, DIM) and scale.ndim == 0


def test_quick_gelu_changes_the_function():
    torch.manual_seed(0)
    gelu = perturb_(clipforge.create_model(TINY)).eval()
    quick = clipforge.create_model(TINY, activation="quick_gelu").eval()
    quick.load_state_dict(gelu.state_dict())
    tokens = gelu.tokenize(["hello"])
    with torch.no_grad():
        assert not torch.allclose(gelu.encode_text(tokens), quick.encode_text(tokens))


def test_too_long_tokens_are_rejected(model):
    with pytest.raises(ValueError, match="exceed the model's context length"):
        model.encode_text(torch.zeros(1, 78, dtype=torch.long))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_pooled_last_block_equals_full_forward(causal, checkpointing):
    """Computing only the pooled row in the last block gives that row of the full output,
    with the same gradients (causal rows attend only up to their own position)."""
    from clipforge.models.layers import Transformer

    torch.manual_seed(0)
    net = Transformer(width=32, layers=3, heads=4, mlp_width=64, activation="gelu", causal=causal)
    net.init_weights()
    perturb_(net)
    net.grad_checkpointing = checkpointing
    x = torch.randn(5, 9, 32, requires_grad=True)
    index = torch.tensor([0, 8, 3, 5, 0])
    rows = torch.arange(5)
    full = net(x)[rows, index]
    full_grads = torch.autograd.grad(full.square().sum(), [x, *net.parameters()])
    pooled = net(x, pool_index=index)
    pooled_grads = torch.autograd.grad(pooled.square().sum(), [x, *net.parameters()])
    assert pooled.shape == (5, 32)
    assert (pooled - full).abs().max() < 1e-5
    for a, b in zip(pooled_grads, full_grads, strict=True):
        assert (a - b).abs().max() < 1e-4
    if causal:  # positions after the pooled one cannot matter
        x2 = x.detach().clone()
        x2[1:4, -1] += 5.0  # row 1 pools at 8 (changes), rows 2/3 pool earlier (unchanged)
        moved = net(x2, pool_index=index)
        assert (moved[2:4] - pooled[2:4]).abs().max() < 1e-6
        assert (moved[1] - pooled[1]).abs().max() > 1e-3


def test_pooling_with_no_blocks_reads_the_token():
    from clipforge.models.layers import Transformer

    net = Transformer(width=8, layers=0, heads=2, mlp_width=16, activation="gelu")
    x = torch.randn(3, 4, 8)
    assert torch.equal(net(x, pool_index=torch.tensor([1, 0, 3])), x[torch.arange(3), [1, 0, 3]])


def test_resnet_trains_with_in_place_ops_and_checkpointing():
    """The ResNet tower's in-place ReLU/residual add stay autograd-safe, with and without
    gradient checkpointing (same gradients both ways)."""
    from clipforge.configs import ClipConfig, ResNetConfig, TextConfig

    cfg = ClipConfig(
        embed_dim=16,
        vision=ResNetConfig(image_size=64, layers=(1, 2, 1, 1), width=16, heads=4),
        text=TextConfig(context_length=8, vocab_size=100, width=16, heads=2, layers=1),
    )
    torch.manual_seed(0)
    model = perturb_(clipforge.create_model(cfg, towers="image")).train()
    pixels = torch.randn(3, 3, 64, 64)

    def grads(checkpointing: bool) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        model.set_grad_checkpointing(checkpointing)
        torch.manual_seed(1)
        model.encode_image(pixels).square().sum().backward()
        return [p.grad.clone() for p in model.visual.parameters()]

    plain, checkpointed = grads(False), grads(True)
    assert all(g.abs().max() > 0 for g in plain)
    for a, b in zip(plain, checkpointed, strict=True):
        assert (a - b).abs().max() <= 1e-5 * max(1.0, a.abs().max().item())
