"""LoRA adapters: freezing, parameter count, identity at init, training, merging, saving."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import clipforge
from clipforge.configs import ClipConfig, TextConfig, ViTConfig
from clipforge.lora import apply_lora, has_lora, lora_parameters, lora_state_dict, merge_lora

from .conftest import sample_images, sample_tokens

WIDTH, LAYERS, MLP = 64, 2, 256  # TextConfig/ViTConfig default mlp_ratio 4


def tiny_config() -> ClipConfig:
    return ClipConfig(
        embed_dim=32,
        vision=ViTConfig(image_size=32, patch_size=8, width=WIDTH, layers=LAYERS, heads=2),
        text=TextConfig(context_length=32, width=WIDTH, heads=2, layers=LAYERS),
    )


def tiny_model(seed: int = 0) -> clipforge.CLIP:
    torch.manual_seed(seed)
    return clipforge.create_model(tiny_config()).eval()


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return sample_images(32, n=3), sample_tokens(32, tiny_config().text.vocab_size)


def outputs(model: clipforge.CLIP) -> tuple[torch.Tensor, torch.Tensor]:
    images, tokens = inputs()
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens)


def train_steps(model: clipforge.CLIP, steps: int = 3) -> None:
    images, tokens = inputs()
    optimizer = torch.optim.AdamW(lora_parameters(model), lr=1e-2)
    model.train()
    for _ in range(steps):
        img, txt, scale = model(images, tokens[:3])
        logits = scale * img @ txt.T
        labels = torch.arange(len(img))
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def expected_count(rank: int, targets: tuple[str, ...], towers: int) -> int:
    per_block = 0
    if "attn" in targets:
        per_block += rank * (3 * WIDTH + WIDTH) + rank * (WIDTH + WIDTH)  # in_proj, out_proj
    if "mlp" in targets:
        per_block += rank * (MLP + WIDTH) * 2  # c_fc, c_proj
    return per_block * LAYERS * towers


def test_config_has_expected_mlp_width():
    assert tiny_config().text.mlp_width == MLP and tiny_config().vision.mlp_width == MLP


@pytest.mark.parametrize(
    ("targets", "towers"),
    [(("attn", "mlp"), ("image", "text")), (("attn",), ("text",)), (("mlp",), ("image",))],
)
def test_only_lora_trainable_and_count(targets, towers):
    model = apply_lora(tiny_model(), rank=4, alpha=8, targets=targets, towers=towers)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".lora_A", ".lora_B")) for n in trainable)
    expected = expected_count(4, targets, len(towers))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    assert sum(p.numel() for p in lora_parameters(model)) == expected
    assert {id(p) for p in lora_parameters(model)} == {
        id(p) for p in model.parameters() if p.requires_grad
    }
    assert len(lora_state_dict(model)) == len(lora_parameters(model))
    for tower in ("image", "text"):
        module = model.visual if tower == "image" else model.text
        adapted = any(".lora_" in n for n, _ in module.named_parameters())
        assert adapted == (tower in towers)


def test_identity_at_init_then_training_changes_output():
    base = tiny_model()
    ref_img, ref_txt = outputs(base)
    model = apply_lora(tiny_model(), rank=4, alpha=8, dropout=0.1)
    img, txt = outputs(model)
    assert torch.equal(img, ref_img) and torch.equal(txt, ref_txt)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if ".lora_" not in k}
    train_steps(model)
    img, txt = outputs(model)
    assert (img - ref_img).abs().max() > 1e-4 and (txt - ref_txt).abs().max() > 1e-4
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in frozen.items())  # base weights untouched


def test_merge_matches_adapted_model_and_restores_keys(tmp_path):
    base = tiny_model()
    base_keys = list(base.state_dict())
    model = apply_lora(tiny_model(), rank=4, alpha=8)
    train_steps(model)
    adapted_img, adapted_txt = outputs(model)
    merge_lora(model)
    assert not has_lora(model)
    assert list(model.state_dict()) == base_keys
    assert type(model.visual.transformer.resblocks[0].attn).__name__ == "SelfAttention"
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    img, txt = outputs(model)
    assert (img - adapted_img).abs().max() <= 1e-5 and (txt - adapted_txt).abs().max() <= 1e-5
    base_img, _ = outputs(base)
    assert (img - base_img).abs().max() > 1e-4

    clipforge.save(model, tmp_path / "merged")
    loaded = clipforge.load(tmp_path / "merged")
    assert list(loaded.state_dict()) == base_keys
    loaded_img, loaded_txt = outputs(loaded)
    assert torch.equal(loaded_img, img) and torch.equal(loaded_txt, txt)


def test_lora_state_dict_round_trip():
    model = apply_lora(tiny_model(), rank=2, alpha=2)
    train_steps(model, steps=2)
    adapters = lora_state_dict(model)
    fresh = apply_lora(tiny_model(), rank=2, alpha=2)
    missing, unexpected = fresh.load_state_dict(adapters, strict=False)
    assert not unexpected and not any(".lora_" in k for k in missing)
    for a, b in zip(outputs(fresh), outputs(model), strict=True):
        assert torch.equal(a, b)


def test_extra_trainable_and_errors():
    model = apply_lora(tiny_model(), rank=2, trainable=("logit_scale",))
    assert model.logit_scale.requires_grad
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model)
    with pytest.raises(ValueError, match="unknown LoRA target"):
        apply_lora(tiny_model(), targets=("qkv",))
    with pytest.raises(ValueError, match="no LoRA adapters"):
        merge_lora(tiny_model())
    resnet = clipforge.create_model("RN50", towers="image")
    with pytest.raises(ValueError, match="no transformer blocks"):
        apply_lora(resnet)


def test_single_tower_model_and_fine_grained_targets():
    torch.manual_seed(0)
    text_only = clipforge.create_model(tiny_config(), towers="text")
    apply_lora(text_only, rank=2, targets=("in_proj", "c_proj"))
    names = [n for n, _ in text_only.named_parameters() if n.endswith(".lora_A")]
    assert len(names) == 2 * LAYERS
    assert all("attn.parametrizations.in_proj_weight" in n or "c_proj" in n for n in names)
    merge_lora(text_only)
    assert not has_lora(text_only)
