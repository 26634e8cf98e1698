"""``clipforge caption``: captions of a tiny CoCa checkpoint, decoded with its tokenizer; a
corrupt image is reported by path (exit 1) and the others are still captioned."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import clipforge
from clipforge.captioning import caption, decode_caption
from clipforge.cli import app
from clipforge.configs import ClipConfig
from clipforge.errors import UsageError

from ..conftest import perturb_, tiny_model

TINY = {
    "embed_dim": 32,
    "vision": {"type": "coca_vit", "image_size": 32, "patch_size": 16, "width": 32, "layers": 1,
               "heads": 2, "attentional_pool": True, "attn_pooler_queries": 4},
    "text": {"type": "coca_text", "width": 32, "heads": 2, "layers": 1},
    "decoder": {"type": "multimodal", "width": 32, "heads": 2, "layers": 1},
}  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = clipforge.create_model(ClipConfig.from_dict(TINY))
    perturb_(model, seed=3)
    model.eval()
    directory = tmp_path_factory.mktemp("coca")
    clipforge.save(model, directory / "tiny-coca")
    images = directory / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / name)
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    return directory / "tiny-coca", images, model


def test_cli_captions_images_and_reports_the_corrupt_one(checkpoint):
    ckpt, images, model = checkpoint
    args = ["caption", str(images), "-m", str(ckpt), "--json", "--beams", "2",
            "--beam-groups", "1", "--seq-len", "8"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert [c["path"].rsplit("/", 1)[-1] for c in data["captions"]] == ["a.png", "b.png"]
    assert len(data["failures"]) == 1 and data["failures"][0][0].endswith("broken.png")
    api = caption(model, [images / "a.png", images / "b.png"], num_beams=2, num_beam_groups=1,
                  seq_len=8)  # fmt: skip
    assert [c["caption"] for c in data["captions"]] == [text for _, text in api.captions]
    assert all(text for _, text in api.captions)


def test_decode_caption_strips_start_end_and_padding(checkpoint):
    model = checkpoint[2]
    tokenizer = model.get_tokenizer()
    ids = tokenizer(["a red bicycle"], context_length=12)[0]
    assert decode_caption(model, ids, 49406, 49407, 0) == "a red bicycle"


def test_caption_refuses_a_model_without_decoder():
    with pytest.raises(UsageError, match="CoCa"):
        caption(tiny_model(), [])
