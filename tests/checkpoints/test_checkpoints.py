"""Checkpoint safety, clear errors, architecture inference and the pretrained registry."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import clipforge
from clipforge.checkpoints import (
    CheckpointError,
    CheckpointMismatchError,
    UnsafeCheckpointError,
    get_pretrained,
    infer_config,
    list_pretrained,
    read_state_dict,
)
from clipforge.checkpoints.formats import openai

from ..conftest import fake_hub_snapshot, perturb_, run_offline


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@functools.cache  # built once per architecture; no test modifies it
def _small(architecture: str = "ViT-S-32") -> clipforge.CLIP:
    torch.manual_seed(0)
    return perturb_(clipforge.create_model(architecture)).eval()


def test_malicious_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Exploit(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="refused to unpickle") as err:
        clipforge.load("ViT-B-32", weights=path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_wrong_checkpoint_names_missing_unexpected_and_mismatched(tmp_path):
    state = openai.from_native(_small("ViT-S-32").state_dict())
    state["extra.weight"] = torch.zeros(3)
    del state["visual.ln_post.bias"]
    path = tmp_path / "vit_s.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(CheckpointMismatchError) as err:
        clipforge.load("ViT-M-32", weights=path)
    message = str(err.value)
    assert str(path) in message
    assert "visual.ln_post.bias" in message and "missing keys" in message
    assert "extra.weight" in message and "unexpected keys" in message
    assert "mismatched shapes" in message and "checkpoint [384] vs model [512]" in message


@pytest.mark.parametrize("architecture", ["ViT-B-32", "RN50", "ViT-H-14"])
def test_architecture_is_inferred_from_shapes(architecture):
    with torch.device("meta"):
        state = clipforge.create_model(architecture).state_dict()
    cfg = infer_config(state)
    expected = clipforge.get_config(architecture)
    # shapes pin down everything except the activation, which weights do not record
    assert cfg.replace(activation=expected.activation) == expected


def test_load_without_a_name_infers_and_reproduces(tmp_path):
    model = _small("ViT-S-32")
    torch.save(openai.from_native(model.state_dict()), tmp_path / "weights.pt")
    loaded = clipforge.load(tmp_path / "weights.pt")
    tokens = model.tokenize(["a diagram", "a dog"])
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(tokens), model.encode_text(tokens))


def test_loading_one_tower_never_allocates_the_other(tmp_path):
    model = _small("ViT-S-32")
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    image_only = clipforge.load(path, towers="image")
    text_only = clipforge.load(path, towers="text")
    assert image_only.text is None and text_only.visual is None
    assert not any(k.startswith("text.") for k in image_only.state_dict())
    assert image_only.num_parameters()["text"] == 0
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(image_only.encode_image(pixels), model.encode_image(pixels))
    with pytest.raises(RuntimeError, match="no text tower"):
        image_only.encode_text(torch.zeros(1, 77, dtype=torch.long))


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"", "not a readable"), (b"hello, not a checkpoint", "not a readable")],
)
def test_unreadable_files_raise_checkpoint_error(tmp_path, content, match):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        read_state_dict(path)


def test_bad_safetensors_and_missing_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        read_state_dict(bad)
    with pytest.raises(CheckpointError, match="not found"):
        clipforge.load(tmp_path / "nope.pt")


def test_registry_lists_openai_and_laion_tags():
    tags = set(list_pretrained("ViT-B-32"))
    assert ("ViT-B-32", "openai") in tags and ("ViT-B-32", "laion2b_s34b_b79k") in tags
    assert get_pretrained("RN50", "openai").activation == "quick_gelu"
    assert get_pretrained("ViT-L-14", "laion2b_s32b_b82k").preprocess["mean"] == [0.5, 0.5, 0.5]
    with pytest.raises(CheckpointError, match="available: openai"):
        get_pretrained("RN50x4", "laion9000")
    for arch, _ in list_pretrained():
        assert arch in clipforge.list_architectures()


@pytest.mark.slow  # the registered ViT-B-32: full-size weights written, then read in a subprocess
def test_pretrained_download_uses_hub_cache_offline(tmp_path):
    """HF_HUB_OFFLINE=1: the download code resolves a hub-layout cache without network."""
    entry = get_pretrained("ViT-B-32", "openai")
    big = perturb_(clipforge.create_model("ViT-B-32")).eval()
    snapshot = fake_hub_snapshot(tmp_path, entry.hub_id)
    torch.save(openai.from_native(big.state_dict()), snapshot / "open_clip_pytorch_model.bin")
    script = (
        "import clipforge, torch, sys\n"
        f"m = clipforge.load('ViT-B-32', pretrained='openai', cache_dir={str(tmp_path)!r})\n"
        f"ref = torch.load({str(tmp_path / 'ref.pt')!r}, weights_only=True)\n"
        "ok = all(torch.equal(m.state_dict()[k], v) for k, v in ref.items())\n"
        "print(m.config.activation, m.preprocess_config.interpolation, ok)\n"
    )
    torch.save(big.state_dict(), tmp_path / "ref.pt")
    out = run_offline(script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["quick_gelu", "bicubic", "True"]


def test_pretrained_offline_without_cache_gives_clear_error(tmp_path):
    script = f"import clipforge; clipforge.load('RN50', pretrained='openai', cache_dir={str(tmp_path)!r})"
    out = run_offline(script)
    assert out.returncode != 0
    assert "CheckpointError" in out.stderr and "timm/resnet50_clip.openai" in out.stderr
