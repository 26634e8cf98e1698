"""CoCa training: ``loss.kind: coca`` equals open_clip's ``CoCaLoss``; a tiny CoCa trains,
saves, loads and captions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipforge
from clipforge.captioning import caption
from clipforge.losses import CoCaLoss
from clipforge.train import ConfigError, config_from_dict, train

TINY_COCA = {
    "embed_dim": 32,
    "vision": {"type": "coca_vit", "image_size": 32, "patch_size": 16, "width": 32, "layers": 1,
               "heads": 2, "attentional_pool": True, "attn_pooler_queries": 4},
    "text": {"type": "coca_text", "context_length": 16, "width": 32, "heads": 2, "layers": 1},
    "decoder": {"type": "multimodal", "width": 32, "heads": 2, "layers": 1,
                "context_length": 16},
}  # fmt: skip
BASE = {
    "model": {"architecture": TINY_COCA},
    "data": {"kind": "procedural", "image_size": 32, "options": {"size": 512, "difficulty": "easy"}},
    "optim": {"lr": 3e-3, "warmup_steps": 1, "weight_decay": 0.0},
    "loss": {"kind": "coca"},
    "batch_size": 16,
    "steps": 5,
    "log_every": 1,
    "checkpoint_every": 100,
    "eval_every": 0,
    "progress": False,
    "tensorboard": False,
}  # fmt: skip


@pytest.mark.parametrize("weights", [(2.0, 1.0), (0.5, 0.0)])
def test_coca_loss_equals_open_clip(weights):
    from open_clip.loss import CoCaLoss as OpenClipCoCaLoss

    gen = torch.Generator().manual_seed(0)
    n, length, vocab = 6, 9, 50
    img = torch.nn.functional.normalize(torch.randn(n, 16, generator=gen), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(n, 16, generator=gen), dim=-1)
    logits = torch.randn(n, length, vocab, generator=gen)
    labels = torch.randint(1, vocab, (n, length), generator=gen)
    labels[:, 5:] = 0  # padding, ignored by both
    scale = torch.tensor(14.3)
    caption_w, clip_w = weights
    ours = CoCaLoss(caption_w, clip_w, pad_id=0)
    ref = OpenClipCoCaLoss(caption_loss_weight=caption_w, clip_loss_weight=clip_w, pad_id=0)
    ref_clip, ref_caption = ref(img, txt, logits, labels, scale)
    total = ours(img, txt, scale, logits, labels)
    assert abs(ours.last["contrastive_loss"] - float(ref_clip)) <= 1e-6
    assert abs(ours.last["caption_loss"] - ref_caption.item()) <= 1e-6
    assert abs(total.item() - (float(ref_clip) + ref_caption.item())) <= 1e-6
    unpadded = CoCaLoss(caption_w, clip_w, pad_id=-100)
    unpadded(img, txt, scale, logits, labels)
    assert abs(unpadded.last["caption_loss"] - ours.last["caption_loss"]) > 1e-3  # pad ignored


def test_coca_kind_on_a_clip_model_is_a_config_error(tmp_path):
    tiny_clip = {"embed_dim": 32,
                 "vision": {"type": "vit", "image_size": 32, "patch_size": 16, "width": 32,
                            "layers": 1, "heads": 2},
                 "text": {"context_length": 16, "width": 32, "heads": 2, "layers": 1}}  # fmt: skip
    cfg = config_from_dict({**BASE, "model": {"architecture": tiny_clip},
                            "output_dir": str(tmp_path / "run")})  # fmt: skip
    with pytest.raises(ConfigError, match="loss.kind=coca needs a CoCa model"):
        train(cfg)


def test_tiny_coca_trains_saves_loads_and_captions(tmp_path):
    cfg = config_from_dict({**BASE, "output_dir": str(tmp_path / "run")})
    result = train(cfg)
    records = [r for r in result.history if r["event"] == "train"]
    captions = [r["caption_loss"] for r in records]
    assert len(captions) == 5 and all(r["contrastive_loss"] > 0 for r in records)
    assert captions[-1] < captions[0] - 0.5, captions
    for r in records:  # the logged loss is the weighted sum of the two terms
        assert abs(r["loss"] - r["caption_loss"] - r["contrastive_loss"]) <= 1e-4
    lines = (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()
    assert "caption_loss" in json.loads(lines[0])

    model = clipforge.load(str(result.last_checkpoint)).eval()
    assert isinstance(model, clipforge.models.CoCa)
    image = tmp_path / "shape.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(image)
    out = caption(model, [image], generation_type="top_k", top_k=1, seq_len=8)
    assert not out.failures
    assert len(out.captions) == 1 and isinstance(out.captions[0][1], str)
    assert out.captions[0][1].strip()


def test_default_kind_of_a_coca_model_is_coca():
    from clipforge.train.model import loss_kind
    from clipforge.train.train_config import LossConfig

    model = clipforge.create_model(clipforge.configs.ClipConfig.from_dict(TINY_COCA))
    assert loss_kind(LossConfig(), model) == "coca"
    assert loss_kind(LossConfig(kind="clip"), model) == "clip"
