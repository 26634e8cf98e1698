"""The README's main job: train a small CLIP from scratch on procedural shapes, on CPU.

No data and no network needed: images and captions are rendered on the fly
(:mod:`clipforge.data.procedural`). After training, the model is evaluated on caption
combinations it never saw (held-out colour–shape pairs) with zero-shot classification and
image↔text retrieval, and an HTML report with plots is written.
"""

from __future__ import annotations

import html
import json
import math
import platform
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._version import __version__
from .api import load
from .data import ProceduralCaptions
from .data.data_config import DataConfig
from .data.procedural import CLASSNAMES, TEST_PAIRS, caption_scene, render_zero_shot, zero_shot_task
from .embedding import embed_images, embed_texts
from .eval import evaluate, retrieval_recall
from .scoring import plot_similarity, similarity_matrix
from .train.loop import train
from .train.train_config import ModelConfig, OptimConfig, TrainConfig, config_to_dict

DEMO_MODEL = {
    "embed_dim": 128,
    "vision": {
        "type": "vit",
        "image_size": 32,
        "patch_size": 4,
        "width": 192,
        "layers": 4,
        "heads": 4,
    },
    "text": {"context_length": 24, "width": 128, "heads": 4, "layers": 4},
}
ZERO_SHOT_TEMPLATES = ["a {c}.", "a photo of a {c}.", "a picture of a {c}."]

#: A run is healthy when its held-out scores reach this multiple of chance.
HEALTHY_TIMES_CHANCE = 3.0


@dataclass
class DemoReport:
    """Numbers the demo measured, with the chance levels to compare them to."""

    train_seconds: float
    steps: int
    final_loss: float
    zero_shot_accuracy: float
    zero_shot_chance: float
    retrieval: dict[str, float]
    retrieval_chance_r1: float
    output_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_path(self) -> Path:
        """The trained model: the run's ``latest`` pointer (``clipforge.load`` / ``--model``)."""
        return self.output_dir / "latest"

    @property
    def next_command(self) -> str:
        """The shell command that classifies the saved sample images with the trained model."""
        return str(self.extra["next_command"])


def demo_config(output_dir: Path, steps: int, batch_size: int, seed: int):
    """The training config of the demo (a tiny ViT on 32-px renders, 4-layer text tower)."""

    return TrainConfig(
        model=ModelConfig(architecture=DEMO_MODEL),
        data=DataConfig(
            kind="procedural",
            image_size=32,
            num_workers=1,
            options={"size": 1_000_000, "difficulty": "mixed"},
        ),
        optim=OptimConfig(lr=1e-3, weight_decay=0.1, warmup_steps=max(1, steps // 20)),
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        output_dir=str(output_dir),
        checkpoint_every=steps,
        keep_last=1,
        log_every=10,
        eval_every=0,
        tensorboard=False,
    )


def zero_shot_accuracy(model, image_size: int, seed: int) -> tuple[float, float]:
    """Accuracy on single objects of held-out colour–shape pairs, among all 35 pair names.

    Runs the ``procedural_zeroshot`` evaluator of :mod:`clipforge.eval` (20 images per pair).
    """

    options = {"image_size": image_size, "n_per_class": 20, "seed": seed, "splits": ["test"]}
    options["templates"] = ZERO_SHOT_TEMPLATES
    metrics = evaluate("procedural_zeroshot", model, options)
    return metrics["zeroshot_test_acc"], 1.0 / len(CLASSNAMES)


def retrieval_metrics(model, n: int, image_size: int, seed: int):
    """Recall@1/5 both ways on ``n`` held-out scenes (identical captions are merged)."""

    data = ProceduralCaptions(n, image_size=image_size, seed=seed, split="test")
    scenes = [data.render(i) for i in range(n)]
    images = [image for _, image in scenes]
    captions = [caption_scene(spec) for spec, _ in scenes]
    unique = sorted(set(captions))
    texts_of_image = [[unique.index(c)] for c in captions]
    image_emb = embed_images(model, images).embeddings
    text_emb = embed_texts(model, unique)
    metrics = retrieval_recall(image_emb, text_emb, texts_of_image, ks=(1, 5))
    return metrics, list(images), captions, 1.0 / len(unique)


def _plots(history: list[dict[str, Any]], model, images, captions, out: Path) -> list[str]:
    import matplotlib


    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history if "loss" in h]
    losses = [h["loss"] for h in history if "loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses)
    ax.set(xlabel="step", ylabel="contrastive loss", title="training loss")
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)
    plt.close(fig)
    sim = similarity_matrix(model, images[:8], captions[:8])
    plot_similarity(sim, images[:8], captions[:8], out / "similarity.png")
    return ["loss.png", "similarity.png"]


def versions() -> dict[str, str]:
    """Versions of clipforge, torch and Python (recorded in the report)."""
    return {
        "clipforge": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def write_samples(out: Path, seed: int) -> tuple[Path, list[str]]:
    """One rendered image per held-out pair in ``out/samples`` (named by its true class)."""

    classnames, samples = zero_shot_task("test", 1)
    folder = out / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for image, label in render_zero_shot(samples, 32, seed):
        names.append(classnames[label])
        image.save(folder / f"{classnames[label].replace(' ', '_')}.png")
    return folder, names


def classify_command(model: Path, images: Path, labels: list[str]) -> str:
    """``clipforge classify`` of ``images`` with the trained ``model`` (shell-quoted)."""
    return shlex.join(
        ["clipforge", "classify", str(images), "--model", str(model)]
        + ["--labels", ",".join(labels), "--templates", "a photo of a {c}."]
    )


def _table(rows: dict[str, Any]) -> str:
    cells = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items()
    )
    return f"<table border=1 cellpadding=4>{cells}</table>"


def _split_section() -> str:

    pairs = ", ".join(f"{c} {s}" for c, s in TEST_PAIRS)
    return (
        "<h2>What is held out</h2><p>Training captions never contain these colour–shape "
        f"pairs: <b>{html.escape(pairs)}</b> (every colour and shape still occurs in training, "
        "only in other combinations). Zero-shot accuracy: 20 single-object renders per "
        "held-out pair, classified among all 35 pair names (templates "
        f"{html.escape(', '.join(ZERO_SHOT_TEMPLATES))}). Retrieval: 200 test scenes, each "
        "containing at least one held-out pair; identical captions are merged. So both "
        "measure compositional generalisation to unseen combinations.</p>"
    )


def health(report: DemoReport, batch_size: int) -> dict[str, str]:
    """What a healthy run scores, beside this run's numbers (multiples of chance)."""

    zs = report.zero_shot_accuracy / report.zero_shot_chance
    r1 = [v / report.retrieval_chance_r1 for k, v in report.retrieval.items() if "R@1" in k]
    start = math.log(batch_size)  # contrastive loss of an untrained model
    times = f"at least {HEALTHY_TIMES_CHANCE:.0f}× chance"
    return {
        "final loss": f"clearly below ln(batch) = {start:.2f}; this run {report.final_loss:.2f}",
        "zero-shot accuracy, held-out pairs": f"{times}; this run {zs:.1f}× chance",
        "retrieval R@1 (both directions)": f"{times}; this run {min(r1):.1f}×–{max(r1):.1f}×",
        "verdict": "healthy"
        if report.final_loss < start and min([zs, *r1]) >= HEALTHY_TIMES_CHANCE
        else "not yet: train longer (the default is 200 steps) or check the install",
    }


def _write_html(report: DemoReport, plots: list[str], config: dict[str, Any]) -> Path:
    rows = {
        "training steps": report.steps,
        "training time (s)": f"{report.train_seconds:.0f}",
        "final loss": f"{report.final_loss:.3f}",
        "zero-shot accuracy, held-out pairs (35 classes)": f"{report.zero_shot_accuracy:.1%} (chance {report.zero_shot_chance:.1%})",
        **{f"retrieval {k}": f"{v:.1%}" for k, v in report.retrieval.items()},
        "retrieval R@1 chance": f"{report.retrieval_chance_r1:.1%}",
    }
    images = "".join(f'<p><img src="{p}" style="max-width:100%"></p>' for p in plots)
    page = (
        "<!doctype html><meta charset='utf-8'><title>clipforge demo</title>"
        "<h1>clipforge demo: CLIP trained from scratch on procedural shapes</h1>"
        f"{_table(rows)}{_split_section()}"
        "<h2>What a healthy run scores</h2><p>Training must lower the loss and lift the "
        "held-out scores well above chance; a few-step run stays near chance.</p>"
        f"{_table(report.extra['health'])}"
        f"<h2>Use the model</h2><p>Trained model: <code>{html.escape(str(report.model_path))}"
        "</code> (<code>clipforge.load(...)</code> in Python, <code>--model</code> on the "
        f"command line):</p><pre>{html.escape(report.next_command)}</pre>{images}"
        f"<h2>Configuration (seed {config['seed']})</h2>"
        f"<pre>{html.escape(json.dumps(config, indent=2))}</pre>"
        f"<h2>Versions</h2>{_table(report.extra['versions'])}"
    )
    path = report.output_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def run_demo(
    output_dir: str | Path = "runs/demo",
    steps: int = 200,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> DemoReport:
    """Train, evaluate on held-out combinations, write ``report.html``; return the numbers."""

    out = Path(output_dir)
    cfg = demo_config(out, steps, batch_size, seed)
    cfg.progress = progress
    torch.manual_seed(seed)
    start = time.perf_counter()
    result = train(cfg, overwrite=True)  # the demo always starts afresh in its run dir
    seconds = time.perf_counter() - start
    model = load(out / "latest")  # what the user is told to load
    accuracy, chance = zero_shot_accuracy(model, 32, seed + 1)
    retrieval, images, captions, r1_chance = retrieval_metrics(model, 200, 32, seed + 2)
    report = DemoReport(
        seconds,
        steps,
        float(result.losses[max(result.losses)]),
        accuracy,
        chance,
        retrieval,
        r1_chance,
        out,
    )
    samples, labels = write_samples(out, seed + 3)
    report.extra["model"] = str(report.model_path)
    report.extra["next_command"] = classify_command(report.model_path, samples, labels)
    report.extra["versions"] = versions()
    report.extra["health"] = health(report, batch_size)
    plots = _plots(result.history, model, images, captions, out)
    report.extra["report"] = str(_write_html(report, plots, config_to_dict(cfg)))
    (out / "demo_metrics.json").write_text(
        json.dumps(
            {k: v for k, v in report.__dict__.items() if k != "output_dir"}, indent=2, default=str
        ),
        encoding="utf-8",
    )
    return report
