"""The README's main job: train a small CLIP from scratch on procedural shapes, on CPU.

No data and no network needed: images and captions are rendered on the fly
(:mod:`clipforge.data.procedural`). After training, the model is evaluated on caption
combinations it never saw (held-out colour–shape pairs) with zero-shot classification and
image↔text retrieval, and an HTML report with plots is written.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

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


def demo_config(output_dir: Path, steps: int, batch_size: int, seed: int):
    """The training config of the demo (a tiny ViT on 32-px renders, 4-layer text tower)."""
    from .data.config import DataConfig
    from .train.config import ModelConfig, OptimConfig, TrainConfig

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
    from .data.procedural import CLASSNAMES
    from .eval import evaluate

    options = {"image_size": image_size, "n_per_class": 20, "seed": seed, "splits": ["test"]}
    options["templates"] = ZERO_SHOT_TEMPLATES
    metrics = evaluate("procedural_zeroshot", model, options)
    return metrics["zeroshot_test_acc"], 1.0 / len(CLASSNAMES)


def retrieval_metrics(model, n: int, image_size: int, seed: int):
    """Recall@1/5 both ways on ``n`` held-out scenes (identical captions are merged)."""
    from .data import ProceduralCaptions
    from .data.procedural import caption_scene
    from .embedding import embed_images, embed_texts
    from .eval import retrieval_recall

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

    from .scoring import plot_similarity, similarity_matrix

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


def _write_html(report: DemoReport, plots: list[str]) -> Path:
    rows = {
        "training steps": report.steps,
        "training time (s)": f"{report.train_seconds:.0f}",
        "final loss": f"{report.final_loss:.3f}",
        "zero-shot accuracy, held-out pairs (35 classes)": f"{report.zero_shot_accuracy:.1%} (chance {report.zero_shot_chance:.1%})",
        **{f"retrieval {k}": f"{v:.1%}" for k, v in report.retrieval.items()},
        "retrieval R@1 chance": f"{report.retrieval_chance_r1:.1%}",
    }
    table = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items()
    )
    images = "".join(f'<p><img src="{p}" style="max-width:100%"></p>' for p in plots)
    page = (
        f"<!doctype html><meta charset='utf-8'><title>clipforge demo</title>"
        f"<h1>clipforge demo: CLIP trained from scratch on procedural shapes</h1>"
        f"<table border=1 cellpadding=4>{table}</table>{images}"
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
    import clipforge

    from .train.loop import train

    out = Path(output_dir)
    cfg = demo_config(out, steps, batch_size, seed)
    cfg.progress = progress
    torch.manual_seed(seed)
    start = time.perf_counter()
    result = train(cfg, overwrite=True)  # the demo always starts afresh in its run dir
    seconds = time.perf_counter() - start
    model = clipforge.load(result.last_checkpoint)
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
    plots = _plots(result.history, model, images, captions, out)
    report.extra["report"] = str(_write_html(report, plots))
    (out / "demo_metrics.json").write_text(
        json.dumps(
            {k: v for k, v in report.__dict__.items() if k != "output_dir"}, indent=2, default=str
        ),
        encoding="utf-8",
    )
    return report
