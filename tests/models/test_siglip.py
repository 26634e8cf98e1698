"""SigLIP models inside clipforge: saved and loaded natively, adapted with LoRA, trained with
the sigmoid loss (the model's own ``logit_bias`` learns), preprocessed as open_clip does."""

from __future__ import annotations

import open_clip
import pytest
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2

import clipforge
from clipforge.checkpoints.formats.open_clip import preprocess_to_native
from clipforge.configs import ClipConfig, ConfigError
from clipforge.lora import apply_lora
from clipforge.preprocess import build_preprocess, load_image

from ..conftest import perturb_, sample_images, shared_path

TINY = {
    "embed_dim": 32,
    "norm_eps": 1e-6,
    "init_logit_bias": -10.0,
    "vision": {
        "type": "siglip_vit", "image_size": 32, "patch_size": 8, "width": 32, "layers": 2,
        "heads": 2,
    },
    "text": {
        "type": "siglip_text", "context_length": 16, "vocab_size": 49408, "width": 32,
        "heads": 2, "layers": 2, "activation": "gelu_tanh",
    },
}  # fmt: skip


def _tiny() -> clipforge.CLIP:
    torch.manual_seed(0)
    return perturb_(clipforge.create_model(ClipConfig.from_dict(TINY))).eval()


def _tokens() -> torch.Tensor:
    return torch.randint(0, 49408, (2, 16), generator=torch.Generator().manual_seed(1))


def test_native_save_and_load_round_trip(tmp_path):
    model = _tiny()
    with torch.no_grad():
        model.logit_bias.fill_(-3.5)
    clipforge.save(model, tmp_path / "siglip")
    loaded = clipforge.load(tmp_path / "siglip").eval()
    assert loaded.config == model.config
    assert loaded.logit_bias.item() == -3.5
    with torch.no_grad():
        assert torch.equal(
            loaded.encode_image(sample_images(32)), model.encode_image(sample_images(32))
        )
        assert torch.equal(loaded.encode_text(_tokens()), model.encode_text(_tokens()))


def test_text_attention_is_bidirectional_and_pools_the_last_position():
    """Unlike CLIP's causal tower, a later token changes the features of earlier positions."""
    model = _tiny()
    tokens = _tokens()
    changed = tokens.clone()
    changed[:, 9] = (changed[:, 9] + 1) % 49408
    with torch.no_grad():
        features = model.text.forward_features(tokens)
        assert not torch.allclose(features[:, 0], model.text.forward_features(changed)[:, 0])
        pooled = model.text.text_projection(features[:, -1])
        assert torch.allclose(pooled, model.encode_text(tokens), atol=1e-6)


def test_tokenize_refuses_the_clip_vocabulary():
    """CLIP's BPE ids would index past a SigLIP vocabulary or mean other words: refuse."""
    with pytest.raises(ValueError, match=r"'siglip_text' text tower needs.*set_tokenizer"):
        _tiny().tokenize(["a photo of a cat"])


def test_lora_adapts_both_siglip_towers():
    model = _tiny()
    apply_lora(model, rank=2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("visual.transformer.resblocks.1.") for n in trainable)
    assert any(n.startswith("text.transformer.resblocks.1.") for n in trainable)


def test_invalid_siglip_configs_are_refused():
    with pytest.raises(ConfigError, match=r"text.proj.*'linaer'"):
        ClipConfig.from_dict({**TINY, "text": {**TINY["text"], "proj": "linaer"}})
    with pytest.raises(ConfigError, match="unknown text.type 'siglip_txt'"):
        ClipConfig.from_dict({**TINY, "text": {**TINY["text"], "type": "siglip_txt"}})
    wide = {**TINY, "vision": {**TINY["vision"], "width": 64}}
    with pytest.raises(ValueError, match="set vision.proj=true"):
        clipforge.create_model(ClipConfig.from_dict(wide))


def test_training_with_the_sigmoid_loss_updates_the_models_bias(tmp_path):
    from clipforge.train import config_from_dict, train

    before = _tiny()
    clipforge.save(before, tmp_path / "init")
    cfg = config_from_dict({
        "model": {"init_from": str(tmp_path / "init"), "tokenizer": "clip"},
        "data": {"kind": "procedural", "image_size": 32, "options": {"size": 64}},
        "loss": {"kind": "siglip"}, "batch_size": 8, "steps": 2, "optim": {"lr": 1e-2},
        "output_dir": str(tmp_path / "run"), "progress": False, "tensorboard": False,
    })  # fmt: skip
    train(cfg)
    after = clipforge.load(tmp_path / "run" / "step_2")
    assert after.logit_bias is not None and after.logit_bias.item() != before.logit_bias.item()


@pytest.fixture(scope="module")
def photos():
    files = sorted(shared_path("data", "photos").glob("*.[pj][np]g"))
    assert len(files) == 8
    return {p.name: load_image(p) for p in files}


@pytest.mark.parametrize("name", ["ViT-B-16-SigLIP", "ViT-B-16-SigLIP2-256",
                                  "ViT-SO400M-14-SigLIP2-378", "ViT-SO400M-14-SigLIP-384",
                                  "ViT-L-16-SigLIP2-512"])  # fmt: skip
def test_preprocessing_equals_open_clip_siglip_transform(photos, name):
    """A SigLIP hub directory's ``preprocess_cfg`` (squash, mean/std 0.5, bicubic) gives
    open_clip's transform for that release, ≤ 1e-6 on the shared photos."""
    size = clipforge.get_config(name).vision.image_size
    pretrained = open_clip.get_pretrained_cfg(name, "webli")
    keys = ("mean", "std", "interpolation", "resize_mode")
    hub_cfg = {"size": [size, size], **{k: pretrained[k] for k in keys}}
    ours = build_preprocess(preprocess_to_native(hub_cfg, size))
    ref = image_transform_v2(PreprocessCfg(**hub_cfg), is_train=False)
    for photo, image in photos.items():
        got, expected = ours(image), ref(image)
        assert got.shape == expected.shape == (3, size, size), photo
        assert (got - expected).abs().max().item() <= 1e-6, photo


def test_zero_shot_probabilities_are_sigmoids_of_scaled_cosine_plus_bias():
    from clipforge.tokenizer import get_tokenizer
    from clipforge.zeroshot import ZeroShotClassifier

    model = _tiny()
    model.set_tokenizer(get_tokenizer())  # ids valid in TINY's 49408-word vocabulary
    with torch.no_grad():
        model.logit_scale.fill_(2.0)
        model.logit_bias.fill_(-1.5)
    images = sample_images(32, n=3)
    clf = ZeroShotClassifier(model, ["cat", "dog", "car"], templates="simple")
    result = clf.predict(images)
    with torch.no_grad():
        image = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
        expected = torch.sigmoid(image @ clf.class_embeddings.T * torch.e**2 - 1.5)
    assert torch.allclose(torch.from_numpy(result.probs), expected, atol=1e-6)
    assert not torch.allclose(expected.sum(dim=1), torch.ones(3))
    softmax = ZeroShotClassifier(model, ["cat", "dog", "car"], "simple", probabilities="softmax")
    assert torch.allclose(torch.from_numpy(softmax.predict(images).probs).sum(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match="need a model with a logit_bias"):
        ZeroShotClassifier(clipforge.create_model("ViT-S-32"), ["a"], probabilities="sigmoid")
