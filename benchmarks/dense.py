"""Dense heat maps: localisation on held-out procedural scenes, per method.

Each scene has two or three shapes of distinct colours and shapes, drawn by the procedural
renderer (which returns every shape's box), from a seed stream the training data never uses
(split id 2, "test", plus ``--seed``). The query names one of them ("a red circle"). Per
method (``clipforge.dense.METHODS``) it reports:

- pointing game: the fraction of scenes whose heat-map peak lies inside the named shape's box;
- mIoU: mean IoU of the map thresholded at 50 % of its range with that box;
- chance: the mean share of the image the box covers (a uniformly random peak's hit rate).

The model is a checkpoint trained by ``clipforge train`` (``--model PATH``); without one, the
benchmark trains one first with examples/train_procedural_tiny.yaml at 64 px, patch 8 (an
8×8 grid), ``difficulty=medium`` (single shapes, counts, two-shape binding captions).

Usage: python benchmarks/dense.py [--model runs/x/latest] [--scenes 500] [--steps 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import clipforge
from clipforge.data.procedural import (
    COLOURS,
    SHAPES,
    SIZES,
    ObjectSpec,
    SceneSpec,
    caption_scene,
    render_scene_with_boxes,
)
from clipforge.dense import METHODS, chance, heatmap, pointing_hit, threshold_iou
from results import write_result

ROOT = Path(__file__).resolve().parents[1]
TRAIN_OVERRIDES = [
    "model.architecture.vision.image_size=64",
    "data.options.difficulty=medium",
    "eval_every=0",
    "keep_last=1",
    "log_every=50",
]


def train_model(steps: int, output_dir: Path) -> Path:
    """Train the tiny procedural CLIP with ``clipforge.train`` and return its checkpoint."""
    from clipforge.train import load_config, train

    overrides = [*TRAIN_OVERRIDES, f"steps={steps}", f"checkpoint_every={steps}",
                 f"output_dir={output_dir}"]  # fmt: skip
    cfg = load_config(ROOT / "examples" / "train_procedural_tiny.yaml", overrides)
    result = train(cfg, overwrite=True)
    return Path(result.last_checkpoint)


def scenes(n: int, image_size: int, seed: int) -> list[dict]:
    """Held-out scenes: 2–3 shapes with distinct colours and shapes, one named target."""
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, 2, 10_000 + i])
        k = int(rng.integers(2, 4))
        shapes = rng.choice(len(SHAPES), size=k, replace=False)
        colours = rng.choice(len(COLOURS), size=k, replace=False)
        objects = [
            ObjectSpec(SHAPES[s], list(COLOURS)[c], SIZES[int(rng.integers(len(SIZES)))])
            for s, c in zip(shapes, colours, strict=True)
        ]
        image, groups = render_scene_with_boxes(SceneSpec(objects), image_size, rng)
        target = int(rng.integers(k))
        x, y, side = groups[target][0]
        obj = objects[target]
        query = caption_scene(SceneSpec([ObjectSpec(obj.shape, obj.colour)]))
        out.append({"image": image, "query": query, "box": (x, y, x + side, y + side)})
    return out


def evaluate(model: torch.nn.Module, data: list[dict], method: str) -> dict:
    """Pointing game, mIoU and chance of ``method`` over ``data``."""
    hits, ious, chances = [], [], []
    start = time.perf_counter()
    for item in data:
        heat = heatmap(model, item["image"], [item["query"]], method=method).maps[0]
        hits.append(pointing_hit(heat, item["box"]))
        ious.append(threshold_iou(heat, item["box"]))
        chances.append(chance(item["box"], heat.shape))
    pg, ch = float(np.mean(hits)), float(np.mean(chances))
    return {
        "pointing_game": pg,
        "miou": float(np.mean(ious)),
        "chance": ch,
        "pointing_over_chance": pg / ch,
        "ms_per_image": 1000 * (time.perf_counter() - start) / len(data),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="checkpoint from clipforge train")
    parser.add_argument("--steps", type=int, default=1000, help="training steps without --model")
    parser.add_argument("--scenes", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/dense.json",
                        help="results file (its folder receives dense.json)")  # fmt: skip
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or train_model(args.steps, Path(tmp) / "run")
        model = clipforge.load(path).eval()
        train_s = time.perf_counter() - started
        torch.set_num_threads(1)
        size = model.config.vision.image_size
        data = scenes(args.scenes, size, args.seed)
        results = {m: evaluate(model, data, m) for m in METHODS}
    print(
        f"{'method':<10} {'pointing':>9} {'mIoU':>6} {'chance':>7} {'PG/chance':>9} {'ms/img':>7}"
    )
    for name, r in results.items():
        print(f"{name:<10} {r['pointing_game']:>9.3f} {r['miou']:>6.3f} {r['chance']:>7.3f} "
              f"{r['pointing_over_chance']:>9.2f} {r['ms_per_image']:>7.1f}")  # fmt: skip
    best = max(results, key=lambda m: results[m]["pointing_game"])
    print(f"best by pointing game: {best}; clipforge.dense.DEFAULT_METHOD is "
          f"{clipforge.dense.DEFAULT_METHOD}")  # fmt: skip
    rows = [
        {"method": m, "pointing game": round(r["pointing_game"], 3), "mIoU": round(r["miou"], 3),
         "chance": round(r["chance"], 3), "pointing / chance": round(r["pointing_over_chance"], 2),
         "ms/image": round(r["ms_per_image"], 1)}
        for m, r in results.items()
    ]  # fmt: skip
    payload = {
        "model": str(args.model) if args.model else f"trained here: {args.steps} steps",
        "train_s": None if args.model else round(train_s, 1),
        "scenes": args.scenes, "seed": args.seed, "image_size": size,
        "threshold": 0.5, "best_by_pointing_game": best, "eval_torch_threads": 1,
        "methods": results, "rows": rows,
    }  # fmt: skip
    print(f"wrote {write_result('dense', payload, args.output.parent)}")


if __name__ == "__main__":
    main()
