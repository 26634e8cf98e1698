"""Training SigLIP models with their own tokenizer: the data loader feeds the ids of the
checkpoint's SentencePiece vocabulary (SigLIP's context 64, pad ``</s>``), the default loss of
a model with a ``logit_bias`` is the sigmoid loss (the bias learns), checkpoints carry the
tokenizer, and LoRA fine-tunes adapters plus what its config names, merging back exactly."""

from __future__ import annotations

import csv
import pickle
import re

import pytest
import torch
import yaml
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app
from clipforge.data.loader import TokenizeFn, build_dataset
from clipforge.lora import apply_lora, has_lora, lora_parameters, merge_lora, merged_state_dict
from clipforge.losses import SigLipLoss
from clipforge.train import config_from_dict, train
from clipforge.train.model import loss_kind
from clipforge.train.train_config import LossConfig

from ..conftest import shared_path
from ..family_helpers import (
    SIGLIP_CONTEXT,
    TINY_SIGLIP,
    flickr_captions,
    tiny_eva,
    tiny_siglip,
    write_siglip_tokenizer,
)

#: the weights LoRA adapts (the MAP head's own ``out_proj`` is not in a block: it stays)
ADAPTED = re.compile(
    r"transformer\.resblocks\.\d+\.(attn\.in_proj_weight|attn\.out_proj\.weight"
    r"|mlp\.c_fc\.weight|mlp\.c_proj\.weight)$"
)
PHOTOS = ["astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "horse.png",
          "hubble_deep_field.jpg", "rocket.jpg"]  # fmt: skip


@pytest.fixture
def table(tmp_path):
    """A CSV of the 8 shared photos with Flickr captions; returns (path, captions)."""
    captions = list(flickr_captions()[:8])
    path = tmp_path / "train.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["filepath", "caption"])
        for photo, caption in zip(PHOTOS, captions, strict=True):
            writer.writerow([str(shared_path("data", "photos", photo)), caption])
    return path, captions


def _config(table_path, tmp_path, model: dict, steps: int = 4) -> dict:
    return {
        "model": model,
        "data": {"kind": "csv", "path": str(table_path), "image_size": 32},
        "batch_size": 8, "steps": steps, "optim": {"lr": 1e-2, "warmup_steps": 0},
        "checkpoint_every": steps, "output_dir": str(tmp_path / "run"), "progress": False,
        "tensorboard": False,
    }  # fmt: skip


def test_the_loader_feeds_the_models_own_token_ids(table, tmp_path):
    path, captions = table
    model = tiny_siglip(tmp_path / "tokenizer")
    cfg = config_from_dict(_config(path, tmp_path, {"init_from": "unused"}))
    dataset = build_dataset(cfg.data, model, seed=0)
    ids = torch.stack([dataset[i][1] for i in range(len(captions))])
    want = model.tokenize(captions)
    assert want.shape == (8, SIGLIP_CONTEXT) and torch.equal(ids, want)
    assert (want[:, -1] == model.get_tokenizer().pad_id).all()  # padded to the full context
    copy = pickle.loads(pickle.dumps(TokenizeFn(SIGLIP_CONTEXT, model.get_tokenizer())))
    assert torch.equal(copy(captions[0]), want[0])  # what a DataLoader worker receives


def test_default_loss_follows_the_model():
    assert loss_kind(LossConfig(), tiny_siglip_like()) == "siglip"
    assert loss_kind(LossConfig(), tiny_eva()) == "clip"
    assert loss_kind(LossConfig(kind="clip"), tiny_siglip_like()) == "clip"


def tiny_siglip_like() -> clipforge.CLIP:
    return clipforge.create_model(clipforge.configs.ClipConfig.from_dict(TINY_SIGLIP))


def test_training_a_siglip_checkpoint_with_its_tokenizer(table, tmp_path):
    """init_from a saved SigLIP checkpoint (tokenizer.json beside it): the sigmoid loss by
    default, the loss falls, the bias learns, and the checkpoints keep the tokenizer."""
    path, captions = table
    before = tiny_siglip(tmp_path / "tokenizer")
    clipforge.save(before, tmp_path / "init")
    assert (tmp_path / "init" / "tokenizer.json").is_file()
    result = train(config_from_dict(_config(path, tmp_path, {"init_from": str(tmp_path / "init")})))
    assert result.losses[4] < result.losses[1]
    after = clipforge.load(tmp_path / "run" / "step_4")
    assert after.logit_bias.item() != before.logit_bias.item()  # only the sigmoid loss moves it
    assert torch.equal(after.tokenize(captions), before.tokenize(captions))


def test_cli_trains_a_siglip_architecture_with_a_tokenizer_file(table, tmp_path):
    path, captions = table
    tokenizer_dir = write_siglip_tokenizer(tmp_path / "tokenizer")
    config = _config(
        path,
        tmp_path,
        {"architecture": TINY_SIGLIP, "tokenizer": str(tokenizer_dir / "tokenizer.json")},
        2,
    )
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["train", str(tmp_path / "train.yaml")])
    assert result.exit_code == 0, result.output
    trained = clipforge.load(tmp_path / "run" / "step_2")
    assert trained.logit_bias.item() != TINY_SIGLIP["init_logit_bias"]
    assert torch.equal(trained.tokenize(captions), tiny_siglip(tmp_path / "t").tokenize(captions))


def test_a_siglip_architecture_without_a_tokenizer_is_refused(table, tmp_path):
    path, _ = table
    cfg = config_from_dict(_config(path, tmp_path, {"architecture": TINY_SIGLIP}))
    with pytest.raises(ValueError, match="needs its checkpoint's own tokenizer"):
        train(cfg)


def _lora_steps(model: clipforge.CLIP, images, tokens, steps: int = 5) -> list[float]:
    """A LoRA fine-tune with the sigmoid loss and the model's own bias."""
    loss_fn = SigLipLoss(gather=False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        image, text, scale = model(images, tokens)
        loss = loss_fn(image, text, scale, model.logit_bias)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_lora_fine_tunes_a_siglip_model_and_merges_exactly(table, tmp_path):
    path, captions = table
    model = tiny_siglip(tmp_path / "tokenizer").train()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.stack([model.preprocess(p) for p in (shared_path("data", "photos", n)
                                                          for n in PHOTOS)])  # fmt: skip
    tokens = model.tokenize(captions)
    apply_lora(model, rank=2, alpha=4, trainable=("logit_scale", "logit_bias"))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    wanted = {id(p) for p in lora_parameters(model)} | {id(model.logit_scale),
                                                         id(model.logit_bias)}  # fmt: skip
    assert trainable == wanted
    losses = _lora_steps(model, images, tokens)
    assert losses[-1] < losses[0] and model.logit_bias.item() != base["logit_bias"].item()
    model.eval()
    with torch.no_grad():
        adapted = model.encode_image(images), model.encode_text(tokens)
    folded = merged_state_dict(model)  # what training checkpoints hold, model unchanged
    assert has_lora(model)
    merge_lora(model)
    state = model.state_dict()
    assert folded.keys() == state.keys() and all(torch.equal(folded[k], state[k]) for k in state)
    moved = {k for k in base if not torch.equal(state[k], base[k])}
    assert moved and all(ADAPTED.search(k) or k in ("logit_scale", "logit_bias") for k in moved)
    with torch.no_grad():
        merged = model.encode_image(images), model.encode_text(tokens)
    assert all((a - m).abs().max() <= 1e-5 for a, m in zip(adapted, merged, strict=True))
    clipforge.save(model, tmp_path / "merged")
    loaded = clipforge.load(tmp_path / "merged")
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(loaded.tokenize(captions)), merged[1])


def test_lora_training_run_saves_merged_checkpoints(table, tmp_path):
    """``lora:`` in a training config: only adapted weights and the configured extras move,
    and each checkpoint is an ordinary (merged) SigLIP model with its tokenizer."""
    path, captions = table
    before = tiny_siglip(tmp_path / "tokenizer")
    clipforge.save(before, tmp_path / "init")
    config = _config(path, tmp_path, {"init_from": str(tmp_path / "init")}, 3)
    result = train(config_from_dict({**config, "lora": {"rank": 2, "alpha": 4}}))
    assert result.losses[3] < result.losses[1]
    after = clipforge.load(tmp_path / "run" / "step_3")
    base, state = before.state_dict(), after.state_dict()
    assert list(state) == list(base)
    moved = {k for k in base if not torch.equal(state[k], base[k])}
    assert "logit_bias" in moved and any(ADAPTED.search(k) for k in moved)
    assert all(ADAPTED.search(k) or k in ("logit_scale", "logit_bias") for k in moved)
    assert torch.equal(after.tokenize(captions), before.tokenize(captions))
    with pytest.raises(clipforge.configs.ConfigError, match="not supported with LoRA"):
        config_from_dict({**config, "lora": {}, "resume": "latest"})


@pytest.mark.parametrize("layout", ["clipforge", "hf"])
def test_saved_checkpoints_carry_the_tokenizer(tmp_path, layout):
    model = tiny_siglip(tmp_path / "tokenizer")
    clipforge.save(model, tmp_path / layout, format=layout)
    assert (tmp_path / layout / "tokenizer.json").is_file()
    texts = ["A Dog, running!", flickr_captions()[0]]
    assert torch.equal(clipforge.load(tmp_path / layout).tokenize(texts), model.tokenize(texts))
