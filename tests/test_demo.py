"""The demo pipeline end to end (shortened): train, evaluate held-out pairs, write the report."""

from __future__ import annotations

import json

from clipforge.demo import run_demo


def test_short_demo_runs_end_to_end_and_writes_report(tmp_path):
    report = run_demo(tmp_path, steps=40, batch_size=64, progress=False)
    assert (tmp_path / "report.html").stat().st_size > 500
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert (tmp_path / "similarity.png").stat().st_size > 1000
    metrics = json.loads((tmp_path / "demo_metrics.json").read_text())
    assert metrics["steps"] == 40
    assert 0 <= report.zero_shot_accuracy <= 1 and report.zero_shot_chance == 1 / 35
    assert set(report.retrieval) == {
        "image_to_text_R@1",
        "text_to_image_R@1",
        "image_to_text_R@5",
        "text_to_image_R@5",
    }
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if "loss" in x]
    assert losses[-1] < losses[0]  # it learns something even in 40 steps
