"""The training output directory is guarded (lock, no silent overwrite, damaged checkpoints)
and optimizer settings are range-checked at config load."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from clipforge.checkpoints import CheckpointError
from clipforge.cli import app
from clipforge.train import ConfigError, OutputDirError, config_from_dict, load_latest, train
from clipforge.train.outdir import claim_output_dir

runner = CliRunner()
TINY = {
    "embed_dim": 16,
    "vision": {"type": "vit", "image_size": 16, "patch_size": 8, "width": 32, "layers": 1,
               "heads": 2},
    "text": {"context_length": 16, "width": 32, "heads": 2, "layers": 1},
}  # fmt: skip
BASE = {
    "model": {"architecture": TINY},
    "data": {"kind": "procedural", "image_size": 16, "options": {"size": 256}},
    "optim": {"lr": 1e-3},
    "batch_size": 8,
    "steps": 2,
    "log_every": 1,
    "checkpoint_every": 1,
    "progress": False,
    "tensorboard": False,
}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_cfg(out: Path, *overrides: str):
    return config_from_dict({**BASE, "output_dir": str(out)}, overrides)


def write_yaml(path: Path, out: Path) -> Path:
    path.write_text(json.dumps({**BASE, "output_dir": str(out)}), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- lock
def test_second_run_in_a_locked_directory_is_refused(tmp_path):
    out = tmp_path / "run"
    with claim_output_dir(out, resume=None):  # the first run, still going
        with pytest.raises(OutputDirError, match="in use by another training run"):
            train(make_cfg(out))
        assert not (out / "metrics.jsonl").exists()
    train(make_cfg(out))  # the lock is released when the first run ends
    assert (out / "step_2").is_dir()


def test_cli_reports_a_locked_directory_in_one_line(tmp_path):
    out = tmp_path / "run"
    config = write_yaml(tmp_path / "cfg.json", out)
    with claim_output_dir(out, resume=None):
        result = runner.invoke(app, ["train", str(config)])
    assert result.exit_code == 2
    assert "in use by another training run" in result.output
    assert "Traceback" not in result.output


# ----------------------------------------------------------------------------- non-empty
def test_non_empty_directory_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "run"
    train(make_cfg(out, "steps=3"))
    metrics = (out / "metrics.jsonl").read_text()
    with pytest.raises(OutputDirError, match=r"not empty .*resume=latest.*--overwrite"):
        train(make_cfg(out))
    assert (out / "metrics.jsonl").read_text() == metrics  # logs untouched
    resumed = train(make_cfg(out, "steps=4", "resume=latest"))
    assert sorted(resumed.losses) == [4]
    train(make_cfg(out), overwrite=True)
    assert sorted(p.name for p in out.glob("step_*")) == ["step_1", "step_2"]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 2


def test_cli_overwrite_flag_and_refusal(tmp_path):
    out = tmp_path / "run"
    config = write_yaml(tmp_path / "cfg.json", out)
    assert runner.invoke(app, ["train", str(config)]).exit_code == 0
    refused = runner.invoke(app, ["train", str(config)])
    assert refused.exit_code == 2 and "not empty" in refused.output
    assert runner.invoke(app, ["train", str(config), "--overwrite"]).exit_code == 0


# ----------------------------------------------------------------------------- resume
@pytest.mark.parametrize("damaged", ["model.safetensors", "state.pt"])
def test_truncated_latest_falls_back_to_newest_intact(tmp_path, caplog, damaged):
    out = tmp_path / "run"
    train(make_cfg(out))
    target = out / "step_2" / damaged
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="clipforge.train"):
        ckpt = load_latest(out)
    assert ckpt.step == 1
    assert any("damaged" in r.message and str(target) in r.message for r in caplog.records)
    resumed = train(make_cfg(out, "steps=3", "resume=latest"))
    assert sorted(resumed.losses) == [2, 3]


def test_every_checkpoint_damaged_is_a_checkpoint_error(tmp_path):
    out = tmp_path / "run"
    train(make_cfg(out))
    for step_dir in out.glob("step_*"):
        (step_dir / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        load_latest(out)


@pytest.mark.parametrize("pointer", ["../elsewhere/step_1", "/tmp", ""])
def test_latest_pointing_outside_is_refused(tmp_path, pointer):
    out = tmp_path / "run"
    train(make_cfg(out))
    (tmp_path / "elsewhere" / "step_1").mkdir(parents=True)
    (out / "latest").write_text(pointer + "\n")
    with pytest.raises(CheckpointError, match="refusing to follow"):
        load_latest(out)


# ----------------------------------------------------------------------------- optim ranges
@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optim.grad_clip_norm=-1", "optim.grad_clip_norm"),
        ("optim.weight_decay=-0.1", "optim.weight_decay"),
        ("optim.warmup_steps=-5", "optim.warmup_steps"),
        ("optim.min_lr_ratio=1.5", "optim.min_lr_ratio"),
        ("optim.lr=-1e-3", "optim.lr"),
        ("optim.lr=nan", "optim.lr"),
        ("optim.betas=[0.9,1.0]", r"optim.betas\[1\]"),
        ("optim.betas=[-0.1,0.98]", r"optim.betas\[0\]"),
        ("optim.eps=0", "optim.eps"),
    ],
)
def test_optimizer_settings_are_range_checked(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key):
        make_cfg(tmp_path, override)


def test_valid_optimizer_edges_are_accepted(tmp_path):
    cfg = make_cfg(
        tmp_path, "optim.min_lr_ratio=1", "optim.betas=[0,0.999]", "optim.weight_decay=0"
    )
    assert cfg.optim.min_lr_ratio == 1.0 and cfg.optim.betas == (0.0, 0.999)


def test_cli_names_the_bad_optimizer_key(tmp_path):
    config = write_yaml(tmp_path / "cfg.json", tmp_path / "run")
    result = runner.invoke(app, ["train", str(config), "optim.grad_clip_norm=-1"])
    assert result.exit_code == 2
    assert "'optim.grad_clip_norm' must be > 0" in result.output
    assert not (tmp_path / "run").exists()  # refused before anything was built or written
