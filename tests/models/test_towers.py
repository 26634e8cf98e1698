"""The Tower protocol: every built-in tower implements it, and a new tower type registered
from outside the package gets LiT, weight-decay groups, checkpointing and training for free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn

import clipforge
from clipforge.configs import (
    ClipConfig,
    ResNetConfig,
    SigLipTextConfig,
    SigLipVisionConfig,
    TextConfig,
    ViTConfig,
)
from clipforge.configs.model_config import register_vision_config
from clipforge.lora import apply_lora
from clipforge.models import Tower, TowerSettings, build_tower, register_tower, towers_in
from clipforge.train.optim import param_groups

from ..conftest import perturb_, sample_images, sample_tokens

SETTINGS = TowerSettings(embed_dim=16)
TINY_TOWERS = {
    "vit": (ViTConfig(image_size=32, patch_size=8, width=32, layers=3, heads=2), "image"),
    "resnet": (ResNetConfig(image_size=64, layers=(1, 1, 2, 1), width=8, heads=2), "image"),
    "text": (TextConfig(context_length=16, vocab_size=100, width=32, heads=2, layers=3), "text"),
    "siglip_vit": (
        SigLipVisionConfig(image_size=30, patch_size=7, width=16, layers=3, heads=2, proj=True),
        "image",
    ),
    "siglip_text": (
        SigLipTextConfig(context_length=16, vocab_size=100, width=32, heads=2, layers=3),
        "text",
    ),
}


def _inputs(config, kind: str) -> torch.Tensor:
    if kind == "image":
        return sample_images(config.image_size)
    return sample_tokens(config.context_length, config.vocab_size)


def _tower(name: str) -> tuple[Tower, torch.Tensor]:
    torch.manual_seed(0)
    config, kind = TINY_TOWERS[name]
    return perturb_(build_tower(config, SETTINGS)), _inputs(config, kind)


@pytest.mark.parametrize("name", sorted(TINY_TOWERS))
def test_builtin_towers_implement_the_protocol(name):
    tower, x = _tower(name)
    assert isinstance(tower, Tower) and tower.output_dim == 16
    assert tower(x).shape == (x.shape[0], 16)
    features = tower.forward_features(x)
    assert features.ndim == 3 and features.shape[0] == x.shape[0]
    names = dict(tower.named_parameters())
    no_decay = tower.no_weight_decay()
    assert no_decay and no_decay < set(names)
    assert all(names[n].ndim < 2 or "bias" in n for n in no_decay)


@pytest.mark.parametrize("name", sorted(TINY_TOWERS))
def test_lock_keeps_last_blocks_and_head_trainable(name):
    tower, _ = _tower(name)
    tower.lock(0)
    assert not any(p.requires_grad for p in tower.parameters())
    tower.lock(1)
    last = {id(p) for p in tower.blocks[-1].parameters()}
    for pname, param in tower.named_parameters():
        expected = id(param) in last or pname.split(".")[0] in tower.head_names
        assert param.requires_grad == expected, pname
    with pytest.raises(ValueError, match="cannot unlock"):
        tower.lock(len(tower.blocks) + 1)


@pytest.mark.parametrize("name", sorted(TINY_TOWERS))
def test_grad_checkpointing_changes_nothing_but_memory(name):
    tower, x = _tower(name)
    tower.train()
    if isinstance(tower, clipforge.models.ModifiedResNet):
        tower.eval()  # BatchNorm batch statistics would differ between the two runs
    out = tower(x)
    grads = torch.autograd.grad(out.square().sum(), list(tower.parameters()))
    tower.set_grad_checkpointing(True)
    out_ckpt = tower(x)
    grads_ckpt = torch.autograd.grad(out_ckpt.square().sum(), list(tower.parameters()))
    assert torch.allclose(out, out_ckpt, atol=1e-6)
    for a, b in zip(grads, grads_ckpt, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_patch_dropout_only_where_declared():
    vit, _ = _tower("vit")
    vit.set_patch_dropout(0.5)
    assert vit.patch_dropout == 0.5
    siglip, images = _tower("siglip_vit")
    siglip.set_patch_dropout(0.5)
    siglip.train()
    assert siglip._tokens(images).shape[1] == 8  # half of the 4x4 grid
    siglip.eval()
    assert siglip._tokens(images).shape[1] == 16
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        vit.set_patch_dropout(1.0)
    resnet, _ = _tower("resnet")
    with pytest.raises(ValueError, match="ModifiedResNet does not support patch dropout"):
        resnet.set_patch_dropout(0.5)


# ----------------------------------------------------------------------------- a new tower
@dataclass(frozen=True)
class PixelMlpConfig:
    """A toy image tower: mean-pooled pixels through a stack of residual MLP blocks."""

    type: ClassVar[str] = "pixel_mlp_test"
    image_size: int = 16
    width: int = 24
    layers: int = 3


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(self.norm(x))


register_vision_config(PixelMlpConfig)


@register_tower(PixelMlpConfig)
class PixelMlpTower(Tower):
    head_names = ("head",)

    def __init__(self, cfg: PixelMlpConfig, settings: TowerSettings) -> None:
        super().__init__()
        self.output_dim = settings.embed_dim
        self.stem = nn.Linear(3, cfg.width)
        self.layers = nn.ModuleList(_Block(cfg.width) for _ in range(cfg.layers))
        self.head = nn.Linear(cfg.width, settings.embed_dim)
        self.checkpointing = False

    @property
    def blocks(self) -> nn.ModuleList:
        return self.layers

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.checkpointing = enable

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self.stem(inputs.flatten(2).transpose(1, 2))
        for block in self.layers:
            x = block(x)
        return x

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(inputs).mean(dim=1))


NEW_ARCH = {
    "embed_dim": 16,
    "vision": {"type": "pixel_mlp_test", "image_size": 16, "width": 24, "layers": 3},
    "text": {"context_length": 16, "width": 32, "heads": 2, "layers": 2},
}


def test_a_registered_tower_gets_lit_weight_decay_and_checkpointing():
    model = clipforge.create_model(ClipConfig.from_dict(NEW_ARCH))
    assert isinstance(model.visual, PixelMlpTower)
    assert [name for name, _ in towers_in(model)] == ["visual", "text"]
    assert model.encode_image(sample_images(16)).shape == (2, 16)

    model.set_grad_checkpointing(True)
    assert model.visual.checkpointing
    model.tower("image").lock(1)  # LiT through the protocol
    trainable = {n for n, p in model.visual.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.visual.named_parameters()
                         if n.startswith(("layers.2.", "head."))}  # fmt: skip
    groups = {g["group"]: set(g["names"]) for g in param_groups(model, 0.1)}
    assert "visual.layers.2.norm.weight" in groups["no_decay"]
    assert "visual.layers.2.fc.weight" in groups["decay"]
    with pytest.raises(ValueError, match="no transformer blocks to adapt"):
        apply_lora(model, towers=("image",))


def test_training_config_builds_a_registered_tower(tmp_path):
    """LiT on the new tower through a training run: frozen parts stay, the rest trains."""
    from clipforge.train import config_from_dict, train

    torch.manual_seed(0)
    before = perturb_(clipforge.create_model(ClipConfig.from_dict(NEW_ARCH)))
    clipforge.save(before, tmp_path / "init")
    cfg = config_from_dict({
        "model": {"init_from": str(tmp_path / "init")},
        "data": {"kind": "procedural", "image_size": 16, "options": {"size": 64}},
        "batch_size": 8, "steps": 2, "lock_image": True, "unlocked_last_n_layers": 1,
        "optim": {"lr": 1e-2}, "output_dir": str(tmp_path / "run"), "progress": False,
        "tensorboard": False,
    })  # fmt: skip
    train(cfg)
    after = clipforge.load(tmp_path / "run" / "step_2")
    assert isinstance(after.visual, PixelMlpTower)
    old, new = before.state_dict(), after.state_dict()
    for name in ("visual.stem.weight", "visual.layers.0.fc.weight", "visual.layers.1.norm.bias"):
        assert torch.equal(old[name], new[name]), name
    for name in ("visual.layers.2.fc.weight", "visual.head.weight", "text.token_embedding.weight"):
        assert not torch.equal(old[name], new[name]), name
