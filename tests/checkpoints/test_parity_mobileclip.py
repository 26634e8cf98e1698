"""clipforge's FastViT towers reproduce open_clip's MobileCLIP / MobileCLIP2 models (≤ 1e-5,
fp32, perturbed random weights and BatchNorm statistics), in the training form and folded;
open_clip's checkpoints load in both forms and save back in its layout.

open_clip builds these as ``CustomTextCLIP``: a timm ``fastvit_mci*`` trunk under
``visual.trunk`` and CLIP's text transformer without the causal mask. Reduced twins keep
each variant's structure (stage kinds, squeeze-excite, norms, stem branches) at one or two
blocks per stage and small widths; the full-size models run in the slow tier.
"""

from __future__ import annotations

import copy
import json

import open_clip
import pytest
import torch
from timm.utils import reparameterize_model

import clipforge
from clipforge.checkpoints import get_pretrained
from clipforge.checkpoints.formats import mobileclip_keys
from clipforge.checkpoints.reader import read_state_dict

from ..conftest import max_diff, perturb_, sample_tokens
from ..mobileclip_helpers import TOL, TWINS, assert_same, loaded, reference, tiny_mobileclip
from .test_pretrained_families import _hub_copy, _load_offline


@pytest.mark.parity
@pytest.mark.parametrize("name", list(TWINS))
def test_reduced_twins_equal_open_clip_in_both_forms(name):
    ref, ours = loaded(name)
    assert_same(ref, ours)
    ours.reparameterize()  # a ViT tower has nothing to fold: a no-op
    assert ours.visual is not None and not ours.visual.can_reparameterize
    assert_same(ref, ours)


@pytest.mark.parity
def test_text_tower_without_causal_mask_sees_the_padding():
    """MobileCLIP's text attends to every position, so (unlike CLIP) the padding after the
    end-of-text token changes the result, and it is never trimmed."""
    ref, ours = loaded("MobileCLIP2-S0")
    tokens = sample_tokens()[:3]  # short captions: most of the context is padding
    assert ours.config.text.causal is False
    with torch.no_grad():
        full = ours.encode_text(tokens)
        cut = tokens[:, : int(tokens.argmax(-1).max()) + 1]
        assert max_diff(ours.text(cut, trim_padding=False), full) > 1e-4
        assert max_diff(ref.encode_text(tokens), full) <= TOL


@pytest.mark.parity
def test_folded_weights_equal_timms_reparameterize_model():
    """``reparameterize`` folds exactly what timm's ``reparameterize_model`` folds: the same
    keys, tensors equal, outputs equal to the unfolded model."""
    ref, ours = loaded("MobileCLIP2-S0")
    folded_ref = reparameterize_model(copy.deepcopy(ref))
    ours.reparameterize()
    want = mobileclip_keys.to_native(folded_ref.state_dict())
    got = ours.state_dict()
    assert set(got) == set(want)
    assert max(max_diff(got[k].float(), want[k].float()) for k in got) <= TOL
    assert_same(folded_ref, ours)


@pytest.mark.parity
@pytest.mark.parametrize("folded", [False, True], ids=["train-form", "folded"])
def test_bare_open_clip_state_dicts_load_in_either_form(tmp_path, folded):
    """A bare open_clip state dict is recognised by its keys; folded weights make the
    (training-form) model fold itself before loading."""
    ref = reference("MobileCLIP2-S0")
    if folded:
        ref = reparameterize_model(ref)
    path = tmp_path / "weights.pt"
    torch.save(ref.state_dict(), path)
    config = tiny_mobileclip("MobileCLIP2-S0").config
    model = clipforge.load(config, weights=path)
    assert model.visual is not None and model.visual.can_reparameterize is not folded
    assert_same(ref, model)


@pytest.mark.parity
def test_state_dicts_translate_back_to_open_clips_layout():
    """``from_native`` gives the ``visual.trunk.*`` keys open_clip's model loads strictly."""
    ref, ours = loaded("MobileCLIP-S2")
    back = mobileclip_keys.from_native(ours.state_dict())
    assert set(back) == set(ref.state_dict())
    ref2 = reference("MobileCLIP-S2")
    ref2.load_state_dict(back)
    assert_same(ref2, ours)
    assert mobileclip_keys.to_native(back).keys() == ours.state_dict().keys()


@pytest.mark.slow  # a full-size MobileCLIP2-S0 written and read twice
@pytest.mark.parity
@pytest.mark.parametrize("folded", [False, True], ids=["train-form", "folded"])
def test_saved_back_in_open_clips_layout(tmp_path, folded):
    """``save(format="open_clip")`` writes ``visual.trunk.*`` keys and a timm-named config
    that open_clip builds; the directory loads back into clipforge identically."""
    torch.manual_seed(0)
    ref = perturb_(open_clip.create_model("MobileCLIP2-S0")).eval()
    ours = clipforge.load("MobileCLIP2-S0", weights=_saved(tmp_path, ref))
    if folded:
        ours.reparameterize()
    clipforge.save(ours, tmp_path / "oc", format="open_clip")
    back = clipforge.load(tmp_path / "oc")
    assert back.visual is not None and back.visual.can_reparameterize is not folded
    assert_same(ref, back, 256)
    state = read_state_dict(tmp_path / "oc" / "open_clip_model.safetensors", trust_pickle=False)
    assert ("visual.trunk.stem.0.reparam_conv.weight" in state) is folded
    if not folded:  # open_clip builds timm's training form from the written config
        meta = json.loads((tmp_path / "oc" / "open_clip_config.json").read_text())
        assert meta["model_cfg"]["vision_cfg"]["timm_model_name"] == "fastvit_mci0"
        ref2 = open_clip.create_model("MobileCLIP2-S0").eval()
        ref2.load_state_dict(state)
        assert_same(ref2, back, 256)


def _saved(tmp_path, model: torch.nn.Module):
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    return path


def test_open_clip_configs_translate_both_ways():
    for name in ("MobileCLIP-S1", "MobileCLIP-S2", "MobileCLIP2-S0", "MobileCLIP2-S4",
                 "MobileCLIP-B", "MobileCLIP2-L-14"):  # fmt: skip
        oc = open_clip.get_model_config(name)
        cfg = mobileclip_keys.config_to_native(oc)
        assert cfg == clipforge.get_config(name)
        back = mobileclip_keys.config_from_native(cfg)
        assert back["vision_cfg"]["timm_model_name"] == oc["vision_cfg"]["timm_model_name"]
        no_mask = oc["text_cfg"]["no_causal_mask"]
        assert back["text_cfg"].get("no_causal_mask", False) is no_mask and back["custom_text"]
        assert back["vision_cfg"]["timm_pool"] == oc["vision_cfg"]["timm_pool"]
        assert mobileclip_keys.config_to_native(back) == cfg


@pytest.mark.slow
@pytest.mark.parity
@pytest.mark.parametrize("name", ["MobileCLIP-S2", "MobileCLIP2-S0", "MobileCLIP-B"])
def test_full_size_models_equal_open_clip(name):
    torch.manual_seed(0)
    ref = perturb_(open_clip.create_model(name)).eval()
    ours = clipforge.create_model(name).eval()
    ours.load_state_dict(mobileclip_keys.to_native(ref.state_dict()))
    assert_same(ref, ours)
    assert_same(ref, ours.reparameterize())


@pytest.mark.slow  # full-size MobileCLIP2-S0 written to a fake hub cache, read in a subprocess
def test_pretrained_entry_loads_offline(tmp_path):
    entry = get_pretrained("MobileCLIP2-S0", "dfndr2b")
    torch.manual_seed(0)
    ref = perturb_(open_clip.create_model("MobileCLIP2-S0")).eval()
    _hub_copy(tmp_path / "hub", entry, ref)
    tokens = open_clip.get_tokenizer("MobileCLIP2-S0")(["a dog", "two cats"])
    got, want, printed = _load_offline(tmp_path, "MobileCLIP2-S0", entry.tag, ref, tokens)
    assert max_diff(got["image"], want["image"]) <= TOL
    assert max_diff(got["text"], want["text"]) <= TOL
    assert printed == ["gelu", "shortest", "bilinear", "0.0"]
    assert torch.equal(
        got["ids"], open_clip.get_tokenizer("MobileCLIP2-S0")(["A Dog, runs!", "two cats"])
    )
