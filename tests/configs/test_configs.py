import csv

import pytest
import torch

import clipforge
from clipforge.configs import ClipConfig, ConfigError

from ..conftest import shared_path

REQUIRED = [
    "RN50",
    "RN101",
    "RN50x4",
    "RN50x16",
    "RN50x64",
    "ViT-B-32",
    "ViT-B-32-quickgelu",
    "ViT-B-16",
    "ViT-L-14",
    "ViT-L-14-336",
    "ViT-H-14",
    "ViT-S-32",
    "ViT-M-32",
]


def _profile() -> dict[str, dict[str, str]]:
    with shared_path("reference", "model_profile.csv").open() as f:
        return {row["model"]: row for row in csv.DictReader(f)}


def test_required_architectures_are_registered():
    assert set(REQUIRED) <= set(clipforge.list_architectures())


@pytest.mark.parametrize("name", REQUIRED)
def test_parameter_counts_match_open_clip_profile(name):
    row = _profile()[name]
    with torch.device("meta"):  # shapes only: no memory, no init cost
        counts = clipforge.create_model(name).num_parameters()
    assert round(counts["image"] / 1e6, 2) == float(row["image_mparams"])
    assert round(counts["text"] / 1e6, 2) == float(row["text_mparams"])
    assert round(counts["total"] / 1e6, 2) == float(row["mparams"])


def test_quickgelu_is_a_config_value_not_a_name_rule():
    assert clipforge.get_config("ViT-B-32-quickgelu").activation == "quick_gelu"
    assert clipforge.get_config("ViT-B-32").activation == "gelu"


def test_config_round_trips_through_dict():
    for name in ("RN50", "ViT-H-14"):
        cfg = clipforge.get_config(name)
        assert ClipConfig.from_dict(cfg.to_dict()) == cfg


def test_invalid_configs_raise_clear_errors():
    good = clipforge.get_config("ViT-B-32").to_dict()
    with pytest.raises(ConfigError, match=r"'vision.widht' \(did you mean 'width'\?\)"):
        ClipConfig.from_dict({**good, "vision": {**good["vision"], "widht": 3}})
    with pytest.raises(ConfigError, match="vision.type"):
        ClipConfig.from_dict({**good, "vision": {"type": "convnet"}})
    with pytest.raises(ConfigError, match="not divisible"):
        ClipConfig.from_dict({**good, "text": {**good["text"], "heads": 7}})
    with pytest.raises(ConfigError, match="unknown architecture"):
        clipforge.get_config("ViT-Z-99")
