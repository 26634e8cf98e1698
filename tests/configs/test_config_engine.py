"""One config engine: did-you-mean hints, types and ranges, checked before anything is built;
user architectures registered or named by path, reachable from the API and training YAML."""

from __future__ import annotations

import json
import math

import pytest

import clipforge
from clipforge.configs import ClipConfig, ConfigError, register_architecture
from clipforge.preprocess import PreprocessConfig
from clipforge.train import config_from_dict, load_config

TINY = {
    "embed_dim": 16,
    "vision": {"type": "vit", "image_size": 32, "patch_size": 16, "width": 32, "layers": 1,
               "heads": 2},
    "text": {"context_length": 16, "width": 32, "heads": 2, "layers": 1},
}  # fmt: skip
BASE = {"model": {"architecture": TINY}, "output_dir": "unused"}


def _fails(match: str, *overrides: str, data: dict | None = None) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_dict(data or BASE, overrides)


def test_nested_typos_get_did_you_mean_before_any_model_is_built(monkeypatch):
    import clipforge.api

    def _no_build(*args, **kwargs):  # pragma: no cover - reaching it is the failure
        raise AssertionError("a model was built before the config was validated")

    monkeypatch.setattr(clipforge.api, "create_model", _no_build)
    _fails(r"'model.architecture.vision.patch' \(did you mean 'patch_size'\?\)",
           "model.architecture.vision.patch=8")  # fmt: skip
    _fails(r"'optim.weight_decy' \(did you mean 'weight_decay'\?\)", "optim.weight_decy=0.1")
    _fails(r"'precision'.*'bf61'.*\(did you mean 'bf16'\?\)", "precision=bf61")
    _fails(r"'stepz' \(did you mean 'steps'\?\)", "stepz=3")


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("steps=0", r"'steps' must be >= 1, got 0"),
        ("patch_dropout=1.5", r"'patch_dropout' must be < 1.0"),
        ("keep_last=-1", r"'keep_last' must be >= 1"),
        ("eval_every=-2", r"'eval_every' must be >= 0"),
        ("micro_batch_size=0", r"'micro_batch_size' must be >= 1"),
        ("steps=1.5", r"'steps': expected an integer"),
    ],
)
def test_ranges_and_types_name_the_key(override, match):
    _fails(match, override)


def test_architecture_and_preprocess_use_the_same_engine():
    good = clipforge.get_config("ViT-B-32").to_dict()
    with pytest.raises(ConfigError, match=r"'text.layres' \(did you mean 'layers'\?\)"):
        ClipConfig.from_dict({**good, "text": {**good["text"], "layres": 3}})
    with pytest.raises(ConfigError, match=r"'vision.width': expected an integer"):
        ClipConfig.from_dict({**good, "vision": {**good["vision"], "width": "wide"}})
    with pytest.raises(ConfigError, match=r"'preprocess.interpolation'.*did you mean 'bicubic'"):
        PreprocessConfig.from_dict({"interpolation": "bicubc"})
    with pytest.raises(ConfigError, match=r"'preprocess.resize_mod' \(did you mean 'resize_mode'"):
        PreprocessConfig.from_dict({"resize_mod": "squash"})
    assert PreprocessConfig.from_dict({"size": 64, "mean": 0.5}).mean == (0.5, 0.5, 0.5)


def test_non_finite_numbers_are_refused():
    from dataclasses import dataclass

    from clipforge.configs.engine import bounded, build

    @dataclass
    class Opts:
        rate: float = bounded(0.5, ge=0.0)
        pair: tuple[float, float] = bounded((0.1, 0.2), ge=0.0, lt=1.0)

    with pytest.raises(ConfigError, match="'opts.rate' must be a finite number"):
        build(Opts, {"rate": math.nan}, "opts")
    with pytest.raises(ConfigError, match=r"'opts.pair\[1\]' must be < 1.0"):
        build(Opts, {"pair": "0.9,1.0"}, "opts")
    assert build(Opts, {"pair": [0.0, 0.5]}, "opts").pair == (0.0, 0.5)


def test_unknown_architecture_suggests_and_folds_case():
    with pytest.raises(ConfigError, match=r"unknown architecture 'ViT-B-33' \(did you mean"):
        clipforge.get_config("ViT-B-33")
    assert clipforge.get_config("vit-b-32") == clipforge.get_config("ViT-B-32")
    _fails(r"unknown architecture 'ViT-Q-32'", data={"model": {"architecture": "ViT-Q-32"}})


def test_user_architecture_by_registration_and_by_path(tmp_path):
    path = tmp_path / "my-tiny.json"
    path.write_text(json.dumps(TINY))
    assert register_architecture(path) == "my-tiny"
    assert "my-tiny" in clipforge.list_architectures()
    model = clipforge.create_model("my-tiny")
    assert model.config == ClipConfig.from_dict(TINY)
    assert clipforge.create_model(str(path)).config == model.config  # a path works unregistered

    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text(f"model:\n  architecture: {path}\noutput_dir: {tmp_path}/run\n")
    assert load_config(yaml_file).model.clip_config() == model.config
    assert (
        config_from_dict({"model": {"architecture": "my-tiny"}}).model.clip_config() == model.config
    )

    with pytest.raises(ConfigError, match="built in"):
        register_architecture(TINY, name="ViT-B-32")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**TINY, "embed_dim": -1}))
    with pytest.raises(ConfigError, match=r"bad.json: invalid architecture.*embed_dim"):
        register_architecture(bad)
