"""clipforge loads open_clip / OpenAI checkpoints and reproduces their embeddings (≤ 1e-5)."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file

import clipforge
from clipforge.checkpoints.formats import open_clip as open_clip_format

from ..conftest import max_diff, open_clip_tiny_twin, perturb_, sample_images, sample_tokens

TOL = 1e-5
pytestmark = pytest.mark.parity
# One full-size check per family runs in the slow tier; every variant runs on a tiny config.
FULL_SIZE = ["ViT-B-32-quickgelu", "RN50"]  # ViT CLIP, ModifiedResNet CLIP
TWINS = ["ViT-B-32", "ViT-B-32-quickgelu", "ViT-B-16", "RN50"]
SMALL_CONFIGS = {
    "tiny-vit": {
        "embed_dim": 48,
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": 64,
            "layers": 2,
            "width": 96,
            "patch_size": 16,
            "head_width": 32,
            "mlp_ratio": 2.5,
        },
        "text_cfg": {
            "context_length": 24,
            "vocab_size": 49408,
            "width": 64,
            "heads": 4,
            "layers": 2,
        },
    },
    "tiny-resnet": {
        "embed_dim": 40,
        "vision_cfg": {"image_size": 64, "layers": [1, 2, 1, 1], "width": 16, "head_width": 16},
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 1000,
            "width": 32,
            "heads": 2,
            "layers": 3,
            "mlp_ratio": 3.0,
        },
    },
}
# Tiny twins of the full-size variants: the same config with sizes shrunk (conftest).
SMALL_CONFIGS.update({f"tiny-{name}": open_clip_tiny_twin(name) for name in TWINS})


def _reference(name: str, force_quick_gelu: bool = False) -> tuple[torch.nn.Module, dict]:
    if name in SMALL_CONFIGS:
        cfg = SMALL_CONFIGS[name]
        model = open_clip.model.CLIP(
            cfg["embed_dim"],
            cfg["vision_cfg"],
            cfg["text_cfg"],
            quick_gelu=force_quick_gelu or cfg.get("quick_gelu", False),
        )
    else:
        model = open_clip.create_model(name, force_quick_gelu=force_quick_gelu)
        cfg = open_clip.get_model_config(name)
    torch.manual_seed(0)
    return perturb_(model).eval(), cfg


def _expected(ref, cfg) -> dict[str, torch.Tensor]:
    size = cfg["vision_cfg"]["image_size"]
    text = cfg["text_cfg"]
    tokens = sample_tokens(text["context_length"], text.get("vocab_size", 49408))
    with torch.no_grad():
        return {
            "images": sample_images(size),
            "tokens": tokens,
            "image": ref.encode_image(sample_images(size)),
            "text": ref.encode_text(tokens),
        }


def _check(model: clipforge.CLIP, expected: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        image = model.encode_image(expected["images"])
        text = model.encode_text(expected["tokens"])
    assert max_diff(image, expected["image"]) <= TOL
    assert max_diff(text, expected["text"]) <= TOL


@pytest.fixture(scope="module", params=list(SMALL_CONFIGS))
def reference(request, tmp_path_factory):
    ref, cfg = _reference(request.param)
    out = tmp_path_factory.mktemp(request.param)
    return request.param, ref, cfg, _expected(ref, cfg), out


def _load(name: str, path) -> clipforge.CLIP:
    """Built-in architectures load by name; custom ones with an explicit config."""
    if name in FULL_SIZE:
        return clipforge.load(name, weights=path)
    return clipforge.load(open_clip_format.config_to_native(SMALL_CONFIGS[name]), weights=path)


def test_pt_state_dict(reference):
    name, ref, _, expected, out = reference
    path = out / "model.pt"
    torch.save(ref.state_dict(), path)
    _check(_load(name, path), expected)


def test_safetensors_state_dict(reference):
    name, ref, _, expected, out = reference
    path = out / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    _check(_load(name, path), expected)


def test_wrapped_training_checkpoint_with_module_prefix(reference):
    name, ref, _, expected, out = reference
    path = out / "epoch_3.pt"
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}
    torch.save({"epoch": 3, "name": "run", "state_dict": state, "optimizer": {}}, path)
    _check(_load(name, path), expected)


def test_hub_layout_directory(reference):
    name, ref, cfg, expected, out = reference
    hub = out / "hub"
    hub.mkdir()
    (hub / "open_clip_config.json").write_text(
        json.dumps(
            {
                "model_cfg": cfg,
                "preprocess_cfg": {
                    "mean": [0.5, 0.5, 0.5],
                    "std": [0.5, 0.5, 0.5],
                    "interpolation": "bicubic",
                    "resize_mode": "squash",
                },
            }
        )
    )
    torch.save(ref.state_dict(), hub / "open_clip_pytorch_model.bin")
    model = clipforge.load(hub)
    assert model.config.activation == ("quick_gelu" if cfg.get("quick_gelu") else "gelu")
    assert model.preprocess_config.resize_mode == "squash"
    assert model.preprocess_config.mean == (0.5, 0.5, 0.5)
    _check(model, expected)


@pytest.mark.parametrize(
    "name",
    [
        *(pytest.param(name, marks=pytest.mark.slow) for name in FULL_SIZE),
        "tiny-vit",
        "tiny-ViT-B-32-quickgelu",
        "tiny-RN50",  # a GELU config: QuickGELU comes from the archive's hint
    ],
)
def test_torchscript_archive_like_openai(name, tmp_path):
    """OpenAI ships fp16 TorchScript archives of QuickGELU models; we read only their tensors.

    The full-size ViT-B/32 and RN50 runs are the slow tier's one full-size check per family.
    """
    ref, cfg = _reference(name, force_quick_gelu=True)
    ref = ref.half().float()  # weights rounded to fp16, as OpenAI's releases
    expected = _expected(ref, cfg)
    traced = torch.jit.trace_module(ref.half(), {"encode_text": expected["tokens"]})
    path = tmp_path / "openai.pt"
    traced.save(str(path))
    model = _load(name, path)
    assert model.config.activation == "quick_gelu"
    assert next(model.parameters()).dtype == torch.float32
    _check(model, expected)


@pytest.mark.parametrize("name", clipforge.list_architectures())
def test_builtin_architecture_equals_open_clip_config(name):
    """Loading by name uses the built-in config: it must be open_clip's, for every name."""
    reference = open_clip.get_model_config(name)
    assert reference is not None, f"open_clip has no {name}"
    assert clipforge.get_config(name) == open_clip_format.model_config_to_native(reference)
