"""MetaCLIP 2 worldwide: every architecture has open_clip's parameter counts and text
pooling; a reduced twin of each text family (XLM-V pooled at the first ``</s>`` = 2, mT5 at
the first ``</s>`` = 1) equals open_clip ≤ 1e-5 fp32 on perturbed random weights, and
round-trips through the open_clip directory format."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file

import clipforge
from clipforge.checkpoints import get_pretrained
from clipforge.checkpoints.formats.open_clip import config_to_native

from ..conftest import max_diff, open_clip_tiny_twin, perturb_, sample_images

TOL = 1e-5
pytestmark = pytest.mark.parity
WORLDWIDE = sorted(n for n in open_clip.list_models() if "worldwide" in n)
#: (architecture, end-of-text id, padding id) of each tokenizer family
TWINS = [("ViT-H-14-worldwide", 2, 1), ("ViT-L-14-worldwide-quickgelu", 1, 0)]


def test_every_worldwide_architecture_is_built_in_with_open_clips_counts():
    assert len(WORLDWIDE) == 7 and set(WORLDWIDE) <= set(clipforge.list_architectures())
    for name in WORLDWIDE:
        with torch.device("meta"):
            ours = clipforge.create_model(name).num_parameters()
            ref = open_clip.create_model(name, device="meta")
        total = sum(p.numel() for p in ref.parameters())
        image = sum(p.numel() for p in ref.visual.parameters())
        assert ours == {"image": image, "text": total - image - 1, "total": total}, name
        text_cfg = open_clip.get_model_config(name)["text_cfg"]
        config = clipforge.get_config(name)
        assert config.text.eot_token_id == text_cfg["eos_id"]
        quick = bool(open_clip.get_model_config(name).get("quick_gelu"))
        assert config.activation == ("quick_gelu" if quick else "gelu")


def test_pretrained_entries_mirror_open_clip():
    for name in WORLDWIDE:
        for tag in open_clip.list_pretrained_tags_by_model(name):
            entry = get_pretrained(name, tag)
            ref = open_clip.get_pretrained_cfg(name, tag)
            assert entry.hub_id == ref["hf_hub"].rstrip("/")
            activation = entry.activation or clipforge.get_config(name).activation
            assert (activation == "quick_gelu") == bool(ref.get("quick_gelu"))
            assert entry.preprocess.get("resize_mode", "shortest") == ref["resize_mode"]
            assert entry.tokenizer == clipforge.configs.get_tokenizer_source(name)


def _tokens(context: int, vocab: int, eos: int, pad: int) -> torch.Tensor:
    """XLM-V/mT5-like ids: text, one end-of-text, padding; the text holds ids larger than
    ``eos`` (argmax pooling would pick a wrong position)."""
    gen = torch.Generator().manual_seed(3)
    rows = []
    for length in (5, 11, context - 1):
        ids = torch.randint(3, vocab, (length,), generator=gen).tolist()
        rows.append(([0] if eos == 2 else []) + ids[: context - 2] + [eos])
    return torch.tensor([r + [pad] * (context - len(r)) for r in rows])


@pytest.mark.parametrize(("name", "eos", "pad"), TWINS)
def test_reduced_twin_matches_open_clip(name, eos, pad, tmp_path):
    cfg = open_clip_tiny_twin(name)
    cfg["text_cfg"]["vocab_size"] = 1000  # the 250k / 900k vocabularies shrunk
    torch.manual_seed(0)
    ref = open_clip.model.CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"],
                               quick_gelu=cfg.get("quick_gelu", False))  # fmt: skip
    ref = perturb_(ref).eval()
    config = config_to_native(cfg)
    builtin = clipforge.get_config(name)
    assert (config.text.eot_token_id, config.activation) == (eos, builtin.activation)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "w.safetensors")
    model = clipforge.load(config, weights=tmp_path / "w.safetensors")
    images = sample_images(cfg["vision_cfg"]["image_size"])
    tokens = _tokens(cfg["text_cfg"]["context_length"], 1000, eos, pad)
    with torch.no_grad():
        diffs = {
            "image": max_diff(model.encode_image(images), ref.encode_image(images)),
            "text": max_diff(model.encode_text(tokens), ref.encode_text(tokens)),
        }
    assert max(diffs.values()) <= TOL, diffs
    out = clipforge.save(model, tmp_path / "saved", format="open_clip")
    text_cfg = json.loads((out / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]
    assert (text_cfg["pool_type"], text_cfg["eos_id"]) == ("eos", eos)
    again = clipforge.load(out)
    assert again.config == model.config
    with torch.no_grad():
        assert torch.equal(again.encode_text(tokens), model.encode_text(tokens))
