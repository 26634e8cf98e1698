"""``clipforge models`` counts parameters from the configs: exact, and without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import clipforge
from clipforge.configs import ClipConfig, ResNetConfig, TextConfig, ViTConfig
from clipforge.configs.param_counts import count_parameters

from ..conftest import REPO, tiered

ODD = [
    ClipConfig(
        embed_dim=24,
        vision=ResNetConfig(image_size=64, layers=(1, 2, 1, 2), width=16, heads=4),
        text=TextConfig(context_length=20, vocab_size=300, width=32, heads=2, layers=1),
    ),
    ClipConfig(
        embed_dim=40,
        vision=ViTConfig(image_size=48, patch_size=12, width=48, layers=3, heads=3, mlp_ratio=2.5),
        text=TextConfig(width=48, heads=3, layers=2, mlp_ratio=3.0),
    ),
]


@pytest.mark.parametrize(
    "cfg",
    [*tiered(clipforge.list_architectures()), *ODD],
    ids=lambda c: c if isinstance(c, str) else "",
)
def test_counts_from_config_equal_the_built_model(cfg):
    config = clipforge.get_config(cfg) if isinstance(cfg, str) else cfg
    with torch.device("meta"):
        built = clipforge.create_model(config).num_parameters()
    assert count_parameters(config) == built


def test_models_command_imports_no_torch():
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from clipforge.cli import app\n"
        "result = CliRunner().invoke(app, ['models', '--json'])\n"
        "assert result.exit_code == 0, result.output\n"
        "assert 'torch' not in sys.modules, 'clipforge models imported torch'\n"
        "print(result.stdout)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO / "src")},
    )
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["ViT-B-32"]["total_params"] == 151277313  # OpenAI's ViT-B/32
