"""The demo pipeline end to end: a few-step smoke test (default tier) and the short demo (slow)."""

from __future__ import annotations

import json

import pytest
import torch

import clipforge
from clipforge.demo import DEMO_MODEL, run_demo

RETRIEVAL_KEYS = {
    "image_to_text_R@1",
    "text_to_image_R@1",
    "image_to_text_R@5",
    "text_to_image_R@5",
}


def test_demo_smoke_few_steps_writes_report_and_checkpoint(tmp_path):
    """The main job's wiring in 3 steps: train, checkpoint, reload, evaluate, report."""
    report = run_demo(tmp_path, steps=3, batch_size=8, progress=False)
    assert (tmp_path / "report.html").stat().st_size > 500
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert (tmp_path / "similarity.png").stat().st_size > 1000
    assert report.extra["report"] == str(tmp_path / "report.html")
    metrics = json.loads((tmp_path / "demo_metrics.json").read_text())
    assert metrics["steps"] == 3 and report.steps == 3
    assert (tmp_path / "latest").read_text().strip() == "step_3"
    model = clipforge.load(tmp_path / "step_3")
    assert model.config.vision.width == DEMO_MODEL["vision"]["width"]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert 0 <= report.zero_shot_accuracy <= 1 and report.zero_shot_chance == 1 / 35
    assert set(report.retrieval) == RETRIEVAL_KEYS
    assert all(0 <= v <= 1 for v in report.retrieval.values())
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [3]
    assert report.final_loss == pytest.approx(lines[-1]["loss"])


@pytest.mark.slow
def test_short_demo_runs_end_to_end_and_writes_report(tmp_path):
    report = run_demo(tmp_path, steps=40, batch_size=64, progress=False)
    assert (tmp_path / "report.html").stat().st_size > 500
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert (tmp_path / "similarity.png").stat().st_size > 1000
    metrics = json.loads((tmp_path / "demo_metrics.json").read_text())
    assert metrics["steps"] == 40
    assert 0 <= report.zero_shot_accuracy <= 1 and report.zero_shot_chance == 1 / 35
    assert set(report.retrieval) == RETRIEVAL_KEYS
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if "loss" in x]
    assert losses[-1] < losses[0]  # it learns something even in 40 steps
