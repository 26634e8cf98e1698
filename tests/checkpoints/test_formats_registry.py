"""The checkpoint format registry: round trips, detection, name errors, third-party formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import clipforge
from clipforge.checkpoints import (
    CheckpointError,
    CheckpointFormat,
    LoadedCheckpoint,
    UnknownFormatError,
    detect_directory_format,
    detect_state_format,
    directory as directory_module,
    formats as registry,
    get_format,
    list_formats,
    read_state_dict,
    register_format,
    to_native_state,
)
from clipforge.checkpoints.directory import read_json, write_directory
from clipforge.checkpoints.formats import hf, openai
from clipforge.configs import ClipConfig, TextConfig
from clipforge.configs.vitamin import ViTaminVisionConfig
from clipforge.preprocess import PreprocessConfig

from ..conftest import perturb_, sample_images, sample_tokens, tiny_model
from ..mobileclip_helpers import tiny_mobileclip

BUILT_IN = ["clipforge", "hf", "hf_siglip", "hf_siglip2", "open_clip", "open_clip_coca",
            "open_clip_eva", "open_clip_hf_text", "open_clip_mobileclip", "open_clip_pe",
            "open_clip_siglip", "open_clip_timm_vit", "open_clip_vitamin", "openai"]  # fmt: skip
MODULES = {"clipforge": "native", "open_clip_eva": "eva_keys", "open_clip_siglip": "siglip_keys",
           "hf_siglip": "siglip_hf_keys", "open_clip_mobileclip": "mobileclip_keys",
           "open_clip_pe": "pe_keys", "open_clip_timm_vit": "timm_vit_keys",
           "open_clip_hf_text": "hf_text_keys", "hf_siglip2": "siglip2_hf_keys",
           "open_clip_vitamin": "vitamin_keys", "open_clip_coca": "coca_keys"}  # fmt: skip
# The files each built-in directory format writes, exactly (no temporary leftovers).
DIRECTORY_FILES = {
    "clipforge": {"clipforge_config.json", "model.safetensors"},
    "hf": {"config.json", "preprocessor_config.json", "model.safetensors"},
    "open_clip": {"open_clip_config.json", "open_clip_model.safetensors"},
}


@pytest.fixture(scope="module")
def model() -> clipforge.CLIP:
    return perturb_(tiny_model())


def _assert_same_model(got: clipforge.CLIP, want: clipforge.CLIP) -> None:
    assert got.config.vision == want.config.vision
    assert got.config.text.width == want.config.text.width
    got_state, want_state = got.state_dict(), want.state_dict()
    assert got_state.keys() == want_state.keys()
    for key, value in want_state.items():
        assert torch.equal(got_state[key], value), key
    images, tokens = sample_images(want.config.vision.image_size), sample_tokens()
    with torch.no_grad():
        assert torch.equal(got.encode_image(images), want.encode_image(images))
        assert torch.equal(got.encode_text(tokens), want.encode_text(tokens))


def test_built_in_formats_are_registered_from_their_modules():
    assert list_formats() == BUILT_IN
    assert sorted(list_formats(savable=True)) == sorted(DIRECTORY_FILES)
    for name in BUILT_IN:
        assert get_format(name) is getattr(registry, MODULES.get(name, name)).FORMAT
    # open_clip directories hold OpenAI's key layout: it says so instead of a matcher of its own
    assert get_format("open_clip").matches is None
    assert get_format("open_clip").from_native is openai.from_native


@pytest.mark.parametrize("name", sorted(DIRECTORY_FILES))
def test_every_directory_format_round_trips_save_load(model, tmp_path, name):
    out = clipforge.save(model, tmp_path / name, format=name)
    assert {p.name for p in out.iterdir()} == DIRECTORY_FILES[name]
    assert detect_directory_format(out) is get_format(name)
    back = clipforge.load(out)
    _assert_same_model(back, model)
    assert back.preprocess_config.image_size == model.preprocess_config.image_size


def _tiny_eva() -> clipforge.CLIP:
    torch.manual_seed(0)
    vision = {"type": "eva", "image_size": 32, "patch_size": 8, "width": 32, "layers": 2,
              "heads": 2, "mlp_ratio": 8 / 3, "swiglu": True, "mlp_norm": True,
              "attn_norm": True, "rope": True}  # fmt: skip
    text = {"width": 32, "heads": 2, "layers": 1}
    config = ClipConfig.from_dict({"embed_dim": 16, "vision": vision, "text": text})
    return perturb_(clipforge.create_model(config)).eval()


def _tiny_siglip(vision_type: str = "siglip_vit") -> clipforge.CLIP:
    torch.manual_seed(0)
    vision = {"type": vision_type, "image_size": 32, "patch_size": 8, "width": 32,
              "layers": 2, "heads": 2}  # fmt: skip
    text = {"type": "siglip_text", "context_length": 77, "vocab_size": 49408, "width": 32,
            "heads": 2, "layers": 1}  # fmt: skip
    config = ClipConfig.from_dict(
        {"embed_dim": 32, "vision": vision, "text": text, "init_logit_bias": -10.0}
    )
    return perturb_(clipforge.create_model(config)).eval()


def _tiny_pe() -> clipforge.CLIP:
    torch.manual_seed(0)
    vision = {"type": "pe", "image_size": 32, "patch_size": 8, "width": 32, "layers": 2,
              "heads": 2, "pool_heads": 2, "rope_ref_grid": 4}  # fmt: skip
    text = {"width": 32, "heads": 2, "layers": 1}
    config = ClipConfig.from_dict({"embed_dim": 32, "vision": vision, "text": text})
    return perturb_(clipforge.create_model(config)).eval()


def _tiny_timm_vit() -> clipforge.CLIP:
    torch.manual_seed(0)
    vision = {"type": "timm_vit", "image_size": 32, "patch_size": 8, "width": 32, "layers": 2,
              "heads": 2, "qkv_bias": False, "layer_scale": True, "rel_pos_dim": 8}  # fmt: skip
    text = {"width": 32, "heads": 2, "layers": 1}
    config = ClipConfig.from_dict({"embed_dim": 32, "vision": vision, "text": text})
    return perturb_(clipforge.create_model(config)).eval()


def _tiny_vitamin() -> clipforge.CLIP:
    torch.manual_seed(0)
    tower = ViTaminVisionConfig(image_size=32, width=32, layers=2, heads=2, stem_width=8,
                                conv_dims=(8, 16), conv_depths=(1, 2))  # fmt: skip
    text = TextConfig(width=32, heads=2, layers=1)
    return perturb_(clipforge.create_model(ClipConfig(32, tower, text))).eval()


def _tiny_hf_text() -> clipforge.CLIP:
    torch.manual_seed(0)
    vision = {"type": "vit", "image_size": 32, "patch_size": 16, "width": 32, "layers": 1,
              "heads": 2}  # fmt: skip
    text = {"type": "roberta", "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1,
            "intermediate_size": 48}  # fmt: skip
    config = ClipConfig.from_dict({"embed_dim": 32, "vision": vision, "text": text})
    return perturb_(clipforge.create_model(config)).eval()


def _tiny_coca() -> clipforge.CLIP:
    torch.manual_seed(0)
    vision = {"type": "coca_vit", "image_size": 32, "patch_size": 16, "width": 32, "layers": 1,
              "heads": 2, "attentional_pool": True, "attn_pooler_queries": 4}  # fmt: skip
    text = {"type": "coca_text", "context_length": 77, "width": 32, "heads": 2, "layers": 1}
    decoder = {"type": "multimodal", "width": 32, "heads": 2, "layers": 1}
    config = ClipConfig.from_dict(
        {"embed_dim": 32, "vision": vision, "text": text, "decoder": decoder}
    )
    return perturb_(clipforge.create_model(config)).eval()


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_format_round_trips_a_weights_file(model, tmp_path, name):
    if name == "open_clip_eva":  # a layout of EVA towers only
        model = _tiny_eva()
    if name in ("open_clip_siglip", "hf_siglip"):  # layouts of SigLIP towers only
        model = _tiny_siglip()
    if name == "open_clip_mobileclip":  # a layout of FastViT towers only
        model = perturb_(tiny_mobileclip("MobileCLIP2-S0"))
    if name == "open_clip_pe":  # a layout of Perception Encoder towers only
        model = _tiny_pe()
    if name == "open_clip_timm_vit":  # a layout of timm ViT towers only
        model = _tiny_timm_vit()
    if name == "open_clip_vitamin":  # a layout of ViTamin towers only
        model = _tiny_vitamin()
    if name == "open_clip_hf_text":  # a layout of HF text towers only
        model = _tiny_hf_text()
    if name == "open_clip_coca":  # CoCa models only
        model = _tiny_coca()
    if name == "hf_siglip2":  # SigLIP 2 NaFlex towers only
        model = _tiny_siglip("siglip_naflex")
    fmt = get_format(name)
    state = fmt.from_native({k: v.contiguous() for k, v in model.state_dict().items()})
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    _assert_same_model(clipforge.load(model.config, weights=path), model)
    # the layout is recognised: the format itself, or the one whose layout it declares
    detected = detect_state_format(read_state_dict(path))
    assert detected is not None and detected.to_native is fmt.to_native


def test_hf_json_files_are_written_as_before(model, tmp_path):
    clipforge.save(model, tmp_path, format="hf")
    text = (tmp_path / "config.json").read_text(encoding="utf-8")
    assert text == json.dumps(hf.config_from_native(model.config), indent=2) + "\n"
    pp = read_json(tmp_path / "preprocessor_config.json")
    assert pp["crop_size"] == {"height": 32, "width": 32} and pp["resample"] == 3
    assert (
        load_file(str(tmp_path / "model.safetensors")).keys()
        == hf.from_native(model.state_dict()).keys()
    )


def test_unknown_format_name_hints_and_writes_nothing(model, tmp_path):
    target = tmp_path / "out"
    with pytest.raises(UnknownFormatError, match=r"did you mean 'open_clip'\?") as err:
        clipforge.save(model, target, format="openclip")
    assert isinstance(err.value, ValueError)
    for name in BUILT_IN:
        assert repr(name) in str(err.value)
    assert not target.exists()
    with pytest.raises(UnknownFormatError, match=r"valid: \['clipforge'"):
        get_format("safetensors")


def test_format_without_directory_layout_cannot_be_saved(model, tmp_path):
    with pytest.raises(CheckpointError, match="no directory layout; use one of 'clipforge'"):
        clipforge.save(model, tmp_path / "out", format="openai")
    assert not (tmp_path / "out").exists()


def test_unsupported_conversion_fails_before_writing(tmp_path):
    with torch.device("meta"):
        resnet = clipforge.create_model("RN50")
    with pytest.raises(ValueError, match="no ResNet"):
        clipforge.save(resnet, tmp_path / "hf", format="hf")
    assert not (tmp_path / "hf").exists()


def test_failed_write_keeps_the_previous_file_whole(model, tmp_path, monkeypatch):
    clipforge.save(model, tmp_path, format="clipforge")
    before = (tmp_path / "model.safetensors").read_bytes()

    def broken_save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(directory_module, "save_file", broken_save_file)
    with pytest.raises(OSError, match="disk full"):
        clipforge.save(perturb_(tiny_model(), seed=5), tmp_path, format="clipforge")
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert {p.name for p in tmp_path.iterdir()} == DIRECTORY_FILES["clipforge"]


def test_state_detection_picks_each_layout(model):
    state = model.state_dict()
    visual = {k: v for k, v in state.items() if k.startswith("visual.")}
    text_openai = openai.from_native({k: v for k, v in state.items() if k.startswith("text.")})
    cases = {
        "clipforge": [state, visual],
        "hf": [hf.from_native(state)],
        "openai": [openai.from_native(state), text_openai],
    }
    for name, states in cases.items():
        for layout in states:
            assert detect_state_format(layout) is get_format(name)
    assert detect_state_format({"encoder.weight": torch.zeros(1)}) is None
    with pytest.raises(CheckpointError, match="unrecognised checkpoint layout"):
        to_native_state({"encoder.weight": torch.zeros(1)}, "x.pt")


def test_directory_detection_prefers_open_clip_over_a_transformers_config(model, tmp_path):
    clipforge.save(model, tmp_path, format="open_clip")
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")  # as on many hub repos
    assert detect_directory_format(tmp_path) is get_format("open_clip")
    _assert_same_model(clipforge.load(tmp_path), model)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert detect_directory_format(empty) is None
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        clipforge.load(empty)


# A third-party format, declared exactly as the built-in modules declare theirs.
_PREFIX = "thirdparty."
_CONFIG = "thirdparty.json"
_WEIGHTS = "thirdparty_weights.safetensors"


def _tp_matches(state: dict[str, torch.Tensor]) -> bool:
    return bool(state) and all(k.startswith(_PREFIX) for k in state)


def _tp_to_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix(_PREFIX): v for k, v in state.items()}


def _tp_from_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {_PREFIX + k: v for k, v in state.items()}


def _tp_read_dir(directory: Path, trust_pickle: bool) -> LoadedCheckpoint:
    meta = read_json(directory / _CONFIG)
    state = _tp_to_native(read_state_dict(directory / _WEIGHTS, trust_pickle))
    return LoadedCheckpoint(
        state,
        ClipConfig.from_dict(meta["architecture"]),
        PreprocessConfig.from_dict(meta["preprocessing"]),
        str(directory),
    )


def _tp_write_dir(
    config: ClipConfig,
    preprocess: PreprocessConfig,
    state: dict[str, torch.Tensor],
    directory: Path,
) -> None:
    meta = {"architecture": config.to_dict(), "preprocessing": preprocess.to_dict()}
    write_directory(directory, {_CONFIG: meta}, _WEIGHTS, _tp_from_native(state))


THIRD_PARTY = CheckpointFormat(
    name="thirdparty",
    matches=_tp_matches,
    to_native=_tp_to_native,
    from_native=_tp_from_native,
    config_files=(_CONFIG,),
    weights_files=(_WEIGHTS,),
    read_dir=_tp_read_dir,
    write_dir=_tp_write_dir,
    priority=100,
)


@pytest.fixture
def third_party():
    yield register_format(THIRD_PARTY)
    registry.FORMATS.unregister(THIRD_PARTY.name)


def test_registered_third_party_format_is_used_by_save_and_load(model, tmp_path, third_party):
    assert "thirdparty" in list_formats(savable=True)
    out = clipforge.save(model, tmp_path, format="thirdparty")
    assert {p.name for p in out.iterdir()} == {_CONFIG, _WEIGHTS}
    assert all(k.startswith(_PREFIX) for k in load_file(str(out / _WEIGHTS)))
    assert detect_directory_format(out) is third_party
    _assert_same_model(clipforge.load(out), model)
    # a bare weights file of its layout is detected by its ``matches``
    assert detect_state_format(read_state_dict(out / _WEIGHTS)) is third_party
    _assert_same_model(clipforge.load(model.config, weights=out / _WEIGHTS), model)
    with pytest.raises(UnknownFormatError, match="did you mean 'thirdparty'"):
        clipforge.save(model, tmp_path / "x", format="third_party")


def test_register_format_refuses_a_taken_name_unless_replacing(third_party):
    with pytest.raises(ValueError, match="already registered"):
        register_format(THIRD_PARTY)
    with pytest.raises(ValueError, match="already registered"):
        register_format(CheckpointFormat("hf", to_native=dict, from_native=dict))
    assert register_format(THIRD_PARTY, replace=True) is THIRD_PARTY
    assert get_format("hf") is hf.FORMAT
