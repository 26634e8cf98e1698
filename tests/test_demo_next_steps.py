"""Demo smoke test (a few steps): the user is told where the model is and how to use it,
the printed command works as written, and the report says what was measured and with what."""

from __future__ import annotations

import json
import platform
import shlex
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app
from clipforge.data.procedural import TEST_PAIRS

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """``clipforge demo`` for 3 steps at batch 16: (its output, the run directory)."""
    out = tmp_path_factory.mktemp("demo") / "runs" / "demo"
    result = runner.invoke(
        app, ["demo", "--steps", "3", "--batch-size", "16", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    return result.output, out


def test_demo_prints_the_model_and_the_exact_next_command(demo_run):
    output, out = demo_run
    assert f"trained model: {out / 'latest'}" in output
    assert "verdict: not yet: train longer" in output
    command = next(line for line in output.splitlines() if line.startswith("clipforge classify"))
    argv = shlex.split(command)
    assert argv[argv.index("--model") + 1] == str(out / "latest")
    labels = argv[argv.index("--labels") + 1].split(",")
    assert labels == [f"{c} {s}" for c, s in TEST_PAIRS]
    metrics = json.loads((out / "demo_metrics.json").read_text())
    assert metrics["extra"]["next_command"] == command


def test_the_printed_command_runs_as_written(demo_run):
    output, out = demo_run
    command = next(line for line in output.splitlines() if line.startswith("clipforge classify"))
    result = runner.invoke(app, [*shlex.split(command)[1:], "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["failures"] == []
    classified = sorted(Path(row["path"]).name for row in data["predictions"])
    assert classified == sorted(f"{c}_{s}.png" for c, s in TEST_PAIRS)
    labels = {f"{c} {s}" for c, s in TEST_PAIRS}
    assert all({t["label"] for t in row["top_k"]} <= labels for row in data["predictions"])


def test_run_directory_and_latest_pointer_load_as_the_newest_step(demo_run):
    _, out = demo_run
    step = clipforge.load(out / "step_3")
    for path in (out / "latest", out):
        model = clipforge.load(path)
        for key, value in model.state_dict().items():
            assert torch.equal(value, step.state_dict()[key]), key


def test_report_states_split_config_seed_versions_and_healthy_scores(demo_run):
    _, out = demo_run
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "What is held out" in page
    for colour, shape in TEST_PAIRS:
        assert f"{colour} {shape}" in page
    assert "among all 35 pair names" in page
    assert "What a healthy run scores" in page and "zero-shot accuracy, held-out pairs" in page
    assert "clearly below ln(batch) = 2.77" in page and "× chance" in page
    metrics = json.loads((out / "demo_metrics.json").read_text())
    assert metrics["extra"]["health"]["verdict"].startswith("not yet")  # 3 steps: near chance
    assert "Configuration (seed 0)" in page and "&quot;batch_size&quot;: 16" in page
    assert "&quot;steps&quot;: 3" in page
    for name, version in (
        ("clipforge", clipforge.__version__),
        ("torch", torch.__version__),
        ("python", platform.python_version()),
    ):
        assert f"<td>{name}</td><td>{version}</td>" in page
    assert "clipforge classify" in page and str(out / "latest") in page
