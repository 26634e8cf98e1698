"""A model created by architecture name preprocesses as its family's released weights do.

open_clip keeps a family's preprocessing on its pretrained tags (``get_pretrained_cfg``), not
on its model configs: the reference is open_clip's transform for the architecture's released
weights, built as ``create_model_and_transforms(name, pretrained=tag)`` builds it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import fields

import huggingface_hub
import open_clip
import pytest
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from safetensors.torch import save_file

import clipforge
from clipforge.checkpoints import CheckpointError
from clipforge.configs import (
    ConfigError,
    get_preprocess,
    get_tokenizer_source,
    list_architectures,
    register_architecture,
)
from clipforge.configs.registry import tokenizer_clean
from clipforge.tokenizer.sentencepiece import SentencePieceTokenizer

from ..conftest import fake_hub_snapshot, max_diff, shared_path
from ..tokenizer.test_sentencepiece import captions, checkpoint_dir  # noqa: F401  (fixtures)

NAMES = [
    "ViT-B-16-SigLIP",
    "ViT-B-16-SigLIP-384",
    "ViT-SO400M-14-SigLIP-384",
    "ViT-B-16-SigLIP2-256",
    "ViT-SO400M-14-SigLIP2-378",
    "EVA02-B-16",
    "EVA02-L-14-336",
    "ViT-H-14-quickgelu",
]
PHOTOS = ["chelsea.png", "coins.png", "hubble_deep_field.jpg"]


def open_clip_transform(name: str):
    """open_clip's eval transform for the first released tag of ``name``."""
    tag = open_clip.list_pretrained_tags_by_model(name)[0]
    pcfg = open_clip.get_pretrained_cfg(name, tag)
    keys = {f.name for f in fields(PreprocessCfg)}
    size = open_clip.get_model_config(name)["vision_cfg"]["image_size"]
    pp = PreprocessCfg(**{k: v for k, v in pcfg.items() if k in keys}, size=size)
    return image_transform_v2(pp, is_train=False)


@pytest.mark.parametrize("name", NAMES)
def test_created_by_name_preprocesses_like_open_clip(name):
    with torch.device("meta"):  # no weights needed: only the preprocessing is compared
        model = clipforge.create_model(name)
    ref = open_clip_transform(name)
    for photo in PHOTOS:
        image = Image.open(shared_path("data", "photos", photo))
        want = ref(image)
        got = model.preprocess(image)
        assert got.shape == want.shape
        assert max_diff(got, want) <= 1e-6, photo


def test_siglip_family_default_and_explicit_override():
    assert get_preprocess("ViT-B-16-SigLIP2-512") == {
        "image_size": 512,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "interpolation": "bicubic",
        "resize_mode": "squash",
    }
    assert get_preprocess("ViT-B-32") == {"image_size": 224}  # OpenAI's pipeline
    explicit = clipforge.PreprocessConfig(image_size=224)
    with torch.device("meta"):
        model = clipforge.create_model("ViT-B-16-SigLIP", preprocess=explicit)
        by_config = clipforge.create_model(clipforge.get_config("ViT-B-16-SigLIP"))
    assert model.preprocess_config == explicit
    assert by_config.preprocess_config.resize_mode == "shortest"  # a bare config: CLIP's


def test_user_architecture_declares_its_preprocessing(tmp_path):
    data = clipforge.get_config("ViT-B-32").to_dict()
    data["preprocess"] = {"resize_mode": "squash", "interpolation": "bilinear"}
    path = tmp_path / "my-squash-b32.json"
    path.write_text(json.dumps(data))
    name = register_architecture(path)
    with torch.device("meta"):
        model = clipforge.create_model(name)
    assert model.preprocess_config.resize_mode == "squash"
    assert model.preprocess_config.interpolation == "bilinear"
    data["preprocess"] = {"resize_mode": "crop"}
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="'preprocess.resize_mode': 'crop' is not one of"):
        clipforge.get_config(path)


def test_family_tokenizer_sources_are_open_clips():
    """Each architecture names the hub repository open_clip tokenizes it with (none: BPE)."""
    for name in list_architectures():
        ref = open_clip.get_model_config(name)
        want = ref["text_cfg"].get("hf_tokenizer_name") if ref else None
        source = get_tokenizer_source(name)
        assert (source or {}).get("hub_id") == want, name
        if source:  # cleaned as open_clip's HFTokenizer cleans (its default: "whitespace")
            clean = ref["text_cfg"].get("tokenizer_kwargs", {}).get("clean", "whitespace")
            assert tokenizer_clean(source) == clean, name
            if "hf_model_name" in ref["text_cfg"]:  # an HF text tower's own tokenizer
                assert source["kind"] == "hf", name


def test_created_by_name_tokenizes_with_its_family_tokenizer(
    tmp_path,
    monkeypatch,
    checkpoint_dir,  # noqa: F811
):
    """The vocabulary comes from the hub cache on first use, canonicalised and padded."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with torch.device("meta"):
        model = clipforge.create_model("ViT-B-16-SigLIP", towers="text")
    with pytest.raises(CheckpointError, match="timm/ViT-B-16-SigLIP.*not in the local cache"):
        model.tokenize(["a cat"])
    snapshot = fake_hub_snapshot(tmp_path, "timm/ViT-B-16-SigLIP")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(checkpoint_dir / name, snapshot / name)
    want = SentencePieceTokenizer.from_dir(checkpoint_dir, 64)(["a dog runs", "two cats"])
    assert torch.equal(model.tokenize(["A Dog, runs!", "two cats"]), want)
    with torch.device("meta"):  # CLIP's BPE ships with clipforge: nothing to fetch
        assert clipforge.create_model("EVA02-B-16", towers="text").tokenize("a").shape == (1, 77)


def test_named_architecture_with_bare_weights_gets_family_defaults(
    tmp_path,
    monkeypatch,
    checkpoint_dir,  # noqa: F811
):
    """load(name, weights=state dict): the family's preprocessing and tokenizer, as
    create_model(name) has them (a registered tiny SigLIP-like architecture)."""
    name = register_architecture({
        "embed_dim": 32, "norm_eps": 1e-6, "init_logit_bias": -10.0,
        "vision": {"type": "siglip_vit", "image_size": 32, "patch_size": 8, "width": 32,
                   "layers": 1, "heads": 2},
        "text": {"type": "siglip_text", "context_length": 16, "vocab_size": 600, "width": 32,
                 "heads": 2, "layers": 1},
        "preprocess": {"mean": 0.5, "std": 0.5, "resize_mode": "squash"},
        "tokenizer": {"kind": "sentencepiece", "hub_id": "me/tiny-siglip"},
    }, name="tiny-siglip-family")  # fmt: skip
    torch.manual_seed(0)
    save_file(clipforge.create_model(name).state_dict(), str(tmp_path / "w.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = fake_hub_snapshot(tmp_path / "hub", "me/tiny-siglip")
    shutil.copy(checkpoint_dir / "tokenizer.json", snapshot / "tokenizer.json")
    model = clipforge.load(name, weights=tmp_path / "w.safetensors")
    assert model.preprocess_config.resize_mode == "squash"
    assert model.preprocess_config.mean == (0.5, 0.5, 0.5)
    want = SentencePieceTokenizer.from_dir(checkpoint_dir, 16)(["a dog"])
    assert torch.equal(model.tokenize("A dog!"), want)
    clipforge.save(model, tmp_path / "saved")  # the fetched family vocabulary travels along
    assert (tmp_path / "saved" / "tokenizer.json").is_file()
    assert torch.equal(clipforge.load(tmp_path / "saved").tokenize("A dog!"), want)
    with pytest.raises(ConfigError, match="'tokenizer' must be"):
        register_architecture({**clipforge.get_config(name).to_dict(), "tokenizer": "bpe"}, "x")
