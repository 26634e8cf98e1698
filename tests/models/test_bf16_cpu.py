"""bf16 autocast on CPUs without bf16 arithmetic: widened fp32 kernels, bf16 numerics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import clipforge
from clipforge.models import bf16_cpu
from clipforge.models.bf16_cpu import WidenedBf16, bf16_cpu_context

from ..conftest import perturb_

TINY_VIT = {
    "embed_dim": 32,
    "vision": {"type": "vit", "image_size": 32, "patch_size": 8, "width": 64, "layers": 2,
               "heads": 4},
    "text": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}  # fmt: skip


@pytest.fixture
def no_bf16_cpu(monkeypatch):
    monkeypatch.setattr(bf16_cpu, "cpu_has_bf16_arithmetic", lambda: False)


def bf16_reference_linear(x, w, b):
    """A bf16 kernel's contract: bf16 operands, exact products, fp32 sum, bf16 result."""
    x, w, b = (t.to(torch.bfloat16).double() for t in (x, w, b))
    return (x @ w.T + b).float().to(torch.bfloat16)


def test_widened_linear_has_bf16_kernel_numerics(no_bf16_cpu):
    gen = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*s, generator=gen) for s in ((16, 96), (48, 96), (48,)))
    with torch.autocast("cpu", torch.bfloat16), WidenedBf16():
        out = F.linear(x, w, b)
    assert out.dtype == torch.bfloat16
    ref = bf16_reference_linear(x, w, b)
    # fp32 accumulation order may flip a final rounding: at most one bf16 ulp apart
    ulp = ref.float().abs().clamp_min(1e-3) * 2.0**-7
    assert ((out.float() - ref.float()).abs() <= ulp).all()
    # and it is not just the fp32 result: operands were rounded to bf16
    assert not torch.equal(out.float(), F.linear(x, w, b))


def test_context_applies_only_to_cpu_bf16_autocast_without_hardware(monkeypatch):
    x = torch.zeros(1)
    monkeypatch.setattr(bf16_cpu, "cpu_has_bf16_arithmetic", lambda: False)
    assert not isinstance(bf16_cpu_context(x), WidenedBf16)  # autocast off
    with torch.autocast("cpu", torch.float16):
        assert not isinstance(bf16_cpu_context(x), WidenedBf16)
    with torch.autocast("cpu", torch.bfloat16):
        assert isinstance(bf16_cpu_context(x), WidenedBf16)
        monkeypatch.setattr(bf16_cpu, "cpu_has_bf16_arithmetic", lambda: True)
        assert not isinstance(bf16_cpu_context(x), WidenedBf16)


def _tiny_model() -> clipforge.CLIP:
    torch.manual_seed(0)
    model = clipforge.create_model(clipforge.ClipConfig.from_dict(TINY_VIT))
    return perturb_(model).eval()


def _encode(model, pixels, tokens):
    with torch.autocast("cpu", torch.bfloat16):
        return model.encode_image(pixels, normalize=True), model.encode_text(tokens, normalize=True)


def test_model_encoders_match_torch_bf16_and_fp32(monkeypatch):
    model = _tiny_model()
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    tokens = model.tokenize(["a cat", "two small red circles", "", "x y z"])[:, :16]
    with torch.no_grad():
        fp32 = model.encode_image(pixels, normalize=True), model.encode_text(tokens, normalize=True)
        monkeypatch.setattr(bf16_cpu, "cpu_has_bf16_arithmetic", lambda: True)
        native = _encode(model, pixels, tokens)  # torch's own bf16 kernels
        monkeypatch.setattr(bf16_cpu, "cpu_has_bf16_arithmetic", lambda: False)
        widened = _encode(model, pixels, tokens)
    for w, n, f in zip(widened, native, fp32, strict=True):
        assert w.dtype == n.dtype == torch.bfloat16
        assert F.cosine_similarity(w.float(), f).min() > 0.999
        assert F.cosine_similarity(w.float(), n.float()).min() > 0.999


def test_training_gradients_flow_through_widened_ops(no_bf16_cpu):
    model = _tiny_model().train()
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    tokens = model.tokenize(["a cat", "a dog", "a red square", "two circles"])[:, :16]

    def grads(autocast: bool) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            image, text, scale = model(pixels, tokens)
            loss = F.cross_entropy((scale * image @ text.T).float(), torch.arange(4))
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    fp32, bf16 = grads(False), grads(True)
    assert fp32.shape == bf16.shape and torch.isfinite(bf16).all()
    assert F.cosine_similarity(fp32, bf16, dim=0) > 0.99
