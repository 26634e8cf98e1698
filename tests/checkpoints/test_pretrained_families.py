"""Pretrained registry entries of the SigLIP, SigLIP 2, EVA-CLIP, MetaCLIP and DFN releases:
copied from open_clip's ``pretrained.py`` (hub ids, activation, preprocessing, tokenizer) and
loadable offline from a hub cache."""

from __future__ import annotations

import json
import shutil

import open_clip
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import clipforge
from clipforge.checkpoints import get_pretrained, list_pretrained
from clipforge.checkpoints.pretrained import PretrainedWeights
from clipforge.cli import app
from clipforge.configs import ConfigError, get_preprocess
from clipforge.preprocess import PreprocessConfig
from clipforge.tokenizer.sentencepiece import SentencePieceTokenizer

from ..conftest import fake_hub_snapshot, max_diff, run_offline, sample_images
from ..tokenizer.test_sentencepiece import captions, checkpoint_dir  # noqa: F401  (fixtures)

FAMILY_TAGS = [
    ("ViT-B-16-SigLIP", "webli"),
    ("ViT-SO400M-14-SigLIP-384", "webli"),
    ("ViT-B-16-SigLIP2", "webli"),
    ("ViT-gopt-16-SigLIP2-384", "webli"),
    ("EVA02-B-16", "merged2b_s8b_b131k"),
    ("EVA01-g-14", "laion400m_s11b_b41k"),
    ("ViT-H-14-quickgelu", "metaclip_fullcc"),
    ("ViT-bigG-14", "metaclip_fullcc"),
    ("ViT-H-14-378-quickgelu", "dfn5b"),
    ("ViT-L-14-quickgelu", "dfn2b"),
    ("convnext_base_w", "laion2b_s13b_b82k_augreg"),
    ("convnext_xxlarge", "laion2b_s34b_b82k_augreg_soup"),
    ("PE-Core-B-16", "meta"),
    ("PE-Core-bigG-14-448", "meta"),
    ("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k"),
    ("roberta-ViT-B-32", "laion2b_s12b_b32k"),
    ("nllb-clip-base-siglip", "mrl"),
    ("ViT-H-14-worldwide", "metaclip2_worldwide"),
    ("ViT-bigG-14-worldwide-378", "metaclip2_worldwide"),
    ("ViTamin-S", "datacomp1b"),
    ("ViTamin-XL-384", "datacomp1b"),
    ("ViT-L-14-CLIPA", "datacomp1b"),
    ("ViT-H-14-CLIPA-336", "laion2b"),
]


def _effective(entry: PretrainedWeights) -> tuple[str, PreprocessConfig]:
    """The activation and preprocessing a load of ``entry`` uses."""
    activation = entry.activation or clipforge.get_config(entry.architecture).activation
    fields = {**get_preprocess(entry.architecture), **entry.preprocess}
    return activation, PreprocessConfig.from_dict(fields)


def test_family_releases_are_registered():
    pairs = set(list_pretrained())
    assert set(FAMILY_TAGS) <= pairs
    assert get_pretrained("ViT-B-16-SigLIP", "webli").hub_id == "timm/ViT-B-16-SigLIP"
    assert get_pretrained("ViT-H-14-378-quickgelu", "dfn5b").hub_id == (
        "apple/DFN5B-CLIP-ViT-H-14-378"
    )


@pytest.mark.parametrize("pair", list_pretrained(), ids="/".join)
def test_every_entry_is_open_clips(pair):
    """Each entry names an architecture clipforge has, and equals open_clip's pretrained
    config for the same (architecture, tag): hub id, QuickGELU, preprocessing, tokenizer."""
    arch, tag = pair
    assert arch in clipforge.list_architectures()
    entry = get_pretrained(arch, tag)
    ref = open_clip.get_pretrained_cfg(arch, tag)
    assert ref, f"{arch}/{tag} is not one of open_clip's releases"
    assert entry.hub_id == ref["hf_hub"].rstrip("/")
    activation, pp = _effective(entry)
    quick = ref.get("quick_gelu") or open_clip.get_model_config(arch).get("quick_gelu")
    assert activation == ("quick_gelu" if quick else "gelu")  # release's, else the model's
    assert pp.mean == pytest.approx(ref["mean"]) and pp.std == pytest.approx(ref["std"])
    assert (pp.interpolation, pp.resize_mode) == (ref["interpolation"], ref["resize_mode"])
    text_cfg = open_clip.get_model_config(arch)["text_cfg"]
    want = text_cfg.get("hf_tokenizer_name")
    assert (entry.tokenizer or {}).get("hub_id") == want
    if want and entry.tokenizer["kind"] == "sentencepiece":
        assert text_cfg["tokenizer_kwargs"] == {"clean": "canonicalize"}  # what ours does
    elif want:  # open_clip's HFTokenizer: whitespace cleaning (CLIPA: the [SEP] id stripped)
        assert entry.tokenizer["kind"] == "hf"
        strip = {"strip_sep_token": True} if entry.tokenizer.get("strip_sep_token") else None
        assert text_cfg.get("tokenizer_kwargs") == strip


def test_a_bad_tokenizer_entry_is_refused():
    with pytest.raises(ConfigError, match="'pretrained ViT-B-16-SigLIP/x tokenizer' must be"):
        PretrainedWeights("ViT-B-16-SigLIP", "x", "a/b", tokenizer={"kind": "wordpiece"})


def test_cli_lists_family_tags():
    result = CliRunner().invoke(app, ["models", "--pretrained", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row["pretrained"] for row in json.loads(result.output)}
    for arch, tag in FAMILY_TAGS:
        assert tag in rows[arch]


def _hub_copy(cache, entry: PretrainedWeights, ref: torch.nn.Module) -> None:
    """Write ``ref``'s weights where the hub cache keeps ``entry``'s repository."""
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(state, str(fake_hub_snapshot(cache, entry.hub_id) / "open_clip_model.safetensors"))


_SCRIPT = """
import clipforge, torch
m = clipforge.load({arch!r}, pretrained={tag!r}, cache_dir={cache!r})
inputs = torch.load({inputs!r})
with torch.no_grad():
    out = {{"image": m.encode_image(inputs["images"]), "text": m.encode_text(inputs["tokens"]),
           "ids": m.tokenize(["A Dog, runs!", "two cats"])}}
torch.save(out, {out!r})
pp = m.preprocess_config
print(m.config.activation, pp.resize_mode, pp.interpolation, pp.mean[0])
"""


def _load_offline(tmp_path, arch: str, tag: str, ref: torch.nn.Module, tokens: torch.Tensor):
    """``clipforge.load(arch, pretrained=tag)`` in an offline interpreter; its outputs and
    printed settings, with open_clip's embeddings of the same inputs."""
    size = clipforge.get_config(arch).vision.image_size
    images = sample_images(size)
    torch.save({"images": images, "tokens": tokens}, tmp_path / "inputs.pt")
    script = _SCRIPT.format(
        arch=arch, tag=tag, cache=str(tmp_path / "hub"),
        inputs=str(tmp_path / "inputs.pt"), out=str(tmp_path / "out.pt"),
    )  # fmt: skip
    run = run_offline(script)
    assert run.returncode == 0, run.stderr
    with torch.no_grad():
        want = {"image": ref.encode_image(images), "text": ref.encode_text(tokens)}
    return torch.load(tmp_path / "out.pt"), want, run.stdout.split()


@pytest.mark.slow  # full-size ViT-B-16-SigLIP written, then read in a subprocess
def test_siglip_entry_loads_offline_with_its_tokenizer(tmp_path, checkpoint_dir):  # noqa: F811
    entry = get_pretrained("ViT-B-16-SigLIP", "webli")
    torch.manual_seed(0)
    ref = open_clip.create_model("ViT-B-16-SigLIP").eval()
    _hub_copy(tmp_path / "hub", entry, ref)
    tok_snapshot = fake_hub_snapshot(tmp_path / "hub", entry.tokenizer["hub_id"])
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(checkpoint_dir / name, tok_snapshot / name)
    tokens = torch.randint(0, 32000, (2, 64))
    got, want, printed = _load_offline(tmp_path, "ViT-B-16-SigLIP", "webli", ref, tokens)
    assert max_diff(got["image"], want["image"]) <= 1e-5
    assert max_diff(got["text"], want["text"]) <= 1e-5
    assert printed == ["gelu", "squash", "bicubic", "0.5"]
    ids = SentencePieceTokenizer.from_dir(checkpoint_dir, 64)(["a dog runs", "two cats"])
    assert torch.equal(got["ids"], ids)  # the release's vocabulary, canonicalised, padded


@pytest.mark.slow  # full-size EVA02-B-16 written, then read in a subprocess
def test_eva_entry_loads_offline(tmp_path):
    entry = get_pretrained("EVA02-B-16", "merged2b_s8b_b131k")
    torch.manual_seed(0)
    ref = open_clip.create_model("EVA02-B-16").eval()
    _hub_copy(tmp_path / "hub", entry, ref)
    tokens = open_clip.get_tokenizer("EVA02-B-16")(["a dog", "two cats"])
    got, want, printed = _load_offline(tmp_path, "EVA02-B-16", entry.tag, ref, tokens)
    assert max_diff(got["image"], want["image"]) <= 1e-5
    assert max_diff(got["text"], want["text"]) <= 1e-5
    assert printed == ["gelu", "shortest", "bicubic", "0.48145466"]
    assert torch.equal(
        got["ids"], open_clip.get_tokenizer("EVA02-B-16")(["A Dog, runs!", "two cats"])
    )
