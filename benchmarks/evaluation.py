"""Evaluation speed: clipforge's zero-shot harness vs CLIP_benchmark's runner, and the
linear-probe sweep, on CIFAR-10 from ../shared/data (extracted to a cache directory).

Zero-shot, two rows, each the same model weights (open_clip builds the architecture with
random weights, or loads ``--weights``; clipforge loads the same file), the same images
(the same evenly spaced subset of the CIFAR-10 test tar), the same templates and class
names, the same DataLoader workers and batch size. CLIP_benchmark's side is its own
``zero_shot_classifier`` + ``run_classification`` over a torchvision ``ImageFolder`` with
open_clip's preprocessing (what ``clip_benchmark eval`` runs).

* model row (``--model``, ViT-B-32): the target. Prints images/s of each runner, the ratio,
  the image tower's nominal GFLOP per image (full forward, counted by
  ``torch.utils.flop_counter``), the achieved GFLOP/s (images/s x that) and its share of a
  matmul peak measured in the same run (fp32 2048x2048 on CPU, bf16 8192x8192 on CUDA).
  Near 100 % both runners are bound by the same matmuls and neither can be much faster.
* pipeline row (``--pipeline-model``, default a 2-layer width-128 ViT at the same 224 input,
  registered in both libraries): the model costs little, so the rate is set by decoding,
  preprocessing, batching and the runner's own overhead -- the regime of a GPU, where a
  ViT-B-32 embeds thousands of images per second.
* loader rates: images/s of each runner's DataLoader alone (decode + preprocess + collate,
  no model), the ceiling of either row.
* classifier: seconds spent embedding the 10 x 18 prompts, a fixed cost per run (CLIP_benchmark
  pads every prompt to 77 tokens, clipforge trims to the longest); "w/o" columns leave it
  out, and a run on fewer than 10,000 images also prints the ratio projected to 10,000.

``--repeats R`` runs each runner R times, interleaved, and keeps each one's best time.
Linear probe: features of ``--probe-train`` CIFAR-10 training images (0 skips it), then the
whole weight-decay sweep and the final fit, in seconds.

Usage: python benchmarks/evaluation.py [--limit N] [--model ViT-B-32] [--weights FILE]
       [--pipeline-model NAME|none] [--repeats R] [--device cuda] [--workers 8]
       [--probe-train 10000] [--train-tar TAR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import clipforge
from clipforge.configs.registry import register_architecture
from clipforge.data.archive import extract_archive, locate
from clipforge.data.data_config import DataConfig
from clipforge.eval.datasets import builtin_classnames, resolve_prompts, subset_indices
from clipforge.eval.registry import evaluate_detailed
from clipforge.eval.zeroshot_classification import TEMPLATES_OF_CLASSNAMES, class_embeddings
from clipforge.templates import get_templates
from results import write_result

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY = "bench-tiny-vit-32"
FULL = 10_000  # CIFAR-10 test images
_TINY_VISION = {"image_size": 224, "patch_size": 32, "width": 128, "layers": 2}
_TINY_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2}


def register_tiny(tmp: Path) -> str:
    """Register the pipeline row's small ViT (224 input) in open_clip and clipforge."""
    import open_clip

    path = tmp / f"{TINY}.json"
    path.write_text(json.dumps({"embed_dim": 128, "vision_cfg": _TINY_VISION | {"head_width": 64},
                                "text_cfg": _TINY_TEXT}))  # fmt: skip
    open_clip.add_model_config(path)
    register_architecture({"embed_dim": 128, "activation": "gelu",
                           "vision": {"type": "vit", "heads": 2, **_TINY_VISION}, "text": _TINY_TEXT}, TINY)  # fmt: skip
    return TINY


def models(name: str, weights: Path | None, device: str):
    """(clipforge model, open_clip model, open_clip preprocess) with the same weights."""
    import open_clip

    torch.manual_seed(0)
    ref, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=weights and str(weights)
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = weights or Path(tmp) / "w.pt"
        if weights is None:
            torch.save(ref.state_dict(), path)
        ours = clipforge.load(name, weights=path)
    return ours.eval().to(device), ref.eval().to(device), preprocess


def matmul_peak(device: str) -> float:
    """GFLOP/s of a large matmul at the benchmark's precision (best of 6; the table takes
    the better of one run before and one after the rows)."""
    cuda = device.startswith("cuda")
    n, dtype = (8192, torch.bfloat16) if cuda else (2048, torch.float32)
    a, b = (
        torch.randn(n, n, device=device, dtype=dtype),
        torch.randn(n, n, device=device, dtype=dtype),
    )
    best = float("inf")
    for _ in range(6):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def image_gflop(model: Any, device: str) -> float:
    """Nominal GFLOP per image of the image tower: the full forward over every token."""
    from torch.utils.flop_counter import FlopCounterMode

    size = model.config.vision.image_size
    pixels = torch.zeros(1, 3, size, size, device=device)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.tower("image").forward_features(pixels)
    return counter.get_total_flops() / 1e9


def reference_loader(preprocess, folder: Path, limit: int, args) -> torch.utils.data.DataLoader:
    """CLIP_benchmark's loader: torchvision ImageFolder, open_clip preprocessing."""
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(str(folder), transform=preprocess)
    keep = subset_indices(len(dataset), limit).tolist()
    return torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, keep),
                                       batch_size=args.batch_size, num_workers=args.workers)  # fmt: skip


def clip_benchmark_zeroshot(ref, preprocess, folder: Path, n: int, model_name: str, args):
    """(seconds, classifier seconds, acc1, loader) of CLIP_benchmark's zero-shot runner,
    building its dataset included (clipforge's seconds include listing the folder too)."""
    import open_clip
    from clip_benchmark.metrics import zeroshot_classification as cb

    tokenizer = open_clip.get_tokenizer(model_name)
    amp = args.device.startswith("cuda")
    start = time.perf_counter()
    loader = reference_loader(preprocess, folder, n, args)
    classifier = cb.zero_shot_classifier(ref, tokenizer, builtin_classnames("cifar10"),
                                         get_templates("cifar10"), args.device, amp=amp)  # fmt: skip
    text_s = time.perf_counter() - start
    logits, target = cb.run_classification(ref, classifier, loader, args.device, amp=amp)
    seconds = time.perf_counter() - start
    return seconds, text_s, float((logits.argmax(dim=1) == target).float().mean()), loader


def clipforge_classifier_seconds(ours, args) -> float:
    """Seconds of clipforge's class embeddings alone (the part of a run spent on text)."""
    classnames = builtin_classnames("cifar10")
    prompts = resolve_prompts(TEMPLATES_OF_CLASSNAMES["cifar10"], classnames)
    precision = "bf16" if args.device.startswith("cuda") else "fp32"
    start = time.perf_counter()
    class_embeddings(ours, classnames, prompts, precision)
    return time.perf_counter() - start


def clipforge_zeroshot(ours, folder: Path, args) -> tuple[float, float, int]:
    """(seconds, acc1, images evaluated) of ``zeroshot_classification``."""
    precision = "bf16" if args.device.startswith("cuda") else "fp32"
    data = {"kind": "folder", "path": str(folder), "num_workers": args.workers}
    options = {"classnames": "cifar10", "limit": args.limit, "batch_size": args.batch_size,
               "precision": precision}  # fmt: skip
    start = time.perf_counter()
    result = evaluate_detailed("zeroshot_classification", ours, options, data)
    seconds = time.perf_counter() - start
    return seconds, result.metrics["acc1"], result.counts["evaluated"]


def loader_rate(loader, n: int) -> float:
    """Images/s of a DataLoader on its own (decode + preprocess + collate, no model)."""
    start = time.perf_counter()
    for _ in loader:
        pass
    return n / (time.perf_counter() - start)


def clipforge_loader(ours, folder: Path, n: int, args) -> torch.utils.data.DataLoader:
    """The DataLoader clipforge's harness streams through, over the same subset."""
    from clipforge.embedding import ImageDataset, _collate
    from clipforge.eval.datasets import load_classification

    task = load_classification(DataConfig(kind="folder", path=str(folder)), "cifar10", n)
    return torch.utils.data.DataLoader(ImageDataset(task.images, ours.image_transform),
                                       batch_size=args.batch_size, num_workers=args.workers,
                                       collate_fn=_collate)  # fmt: skip


def zeroshot_row(model_name: str, weights: Path | None, folder: Path, args) -> dict[str, Any]:
    """Both runners on ``model_name``, interleaved ``--repeats`` times (best time each)."""
    ours, ref, preprocess = models(model_name, weights, args.device)
    ours_s = theirs_s = ours_text = theirs_text = float("inf")
    for _ in range(args.repeats):
        seconds, acc, n = clipforge_zeroshot(ours, folder, args)
        ours_s = min(ours_s, seconds)
        ours_text = min(ours_text, clipforge_classifier_seconds(ours, args))
        seconds, text_s, ref_acc, loader = clip_benchmark_zeroshot(
            ref, preprocess, folder, n, model_name, args
        )
        theirs_s, theirs_text = min(theirs_s, seconds), min(theirs_text, text_s)
    return {
        "model": model_name, "n": n, "acc": acc, "ref_acc": ref_acc,
        "ours": (n, ours_s, ours_text), "theirs": (n, theirs_s, theirs_text),
        "gflop": image_gflop(ours, args.device),
        "ours_loader": loader_rate(clipforge_loader(ours, folder, n, args), n),
        "theirs_loader": loader_rate(loader, n), "clipforge_model": ours,
    }  # fmt: skip


def projected(row: dict[str, Any], rates: dict[str, tuple[float, float]]) -> float:
    """End-to-end ratio at ``FULL`` images: the classifier is a fixed cost, paid once, so
    its share (large in a short run: CLIP_benchmark embeds prompts padded to 77 tokens,
    clipforge trims them) shrinks; the images cost what they cost per image here."""
    ours, theirs = (FULL / rates[k][1] + row[k][2] for k in ("ours", "theirs"))
    return theirs / ours


def print_rows(
    rows: list[tuple[str, dict[str, Any]]], peak: float, args
) -> list[dict[str, Any]]:
    """The side-by-side table: images/s end to end (the target) and without the class
    embeddings, achieved GFLOP/s and % of the matmul peak, and the loaders' ceilings; returns
    the rows for the result file."""
    table = []
    print(f"zero-shot CIFAR-10, {args.device}, templates {TEMPLATES_OF_CLASSNAMES['cifar10']}, "
          f"batch {args.batch_size}, {args.workers} workers, best of {args.repeats}; "
          f"matmul peak {peak:.0f} GFLOP/s")  # fmt: skip
    for label, r in rows:
        print(f"{label}: {r['model']} ({r['gflop']:.2f} GFLOP/image), {r['n']} images, "
              f"acc1 clipforge {r['acc']:.4f} / CLIP_benchmark {r['ref_acc']:.4f}")  # fmt: skip
        print(f"  {'':15s}{'images/s':>9s}  {'classifier':>10s}  {'images/s w/o':>12s}  "
              f"{'GFLOP/s':>7s}  {'% peak':>6s}  {'loader alone':>12s}")  # fmt: skip
        rates = {}
        for who, key in (("clipforge", "ours"), ("CLIP_benchmark", "theirs")):
            n, seconds, text_s = r[key]
            rates[key] = (n / seconds, n / max(seconds - text_s, 1e-9))
            gflops = rates[key][1] * r["gflop"]
            print(
                f"  {who:15s}{rates[key][0]:9.1f}  {text_s:9.1f}s  {rates[key][1]:12.1f}  "
                f"{gflops:7.1f}  {100 * gflops / peak:5.1f}%  {r[key + '_loader']:12.1f}"
            )
            table.append({"task": f"zero-shot CIFAR-10, {r['model']}, {r['n']} images",
                          "engine": who, "images/s": rates[key][0],
                          "classifier s": text_s, "images/s w/o classifier": rates[key][1],
                          "% matmul peak": 100 * gflops / peak, "acc1": r["acc" if key == "ours"
                          else "ref_acc"]})  # fmt: skip
        ratio, images_ratio = (a / b for a, b in zip(rates["ours"], rates["theirs"], strict=True))
        print(
            f"  clipforge / CLIP_benchmark: {ratio:.2f}x end to end, {images_ratio:.2f}x "
            f"without the classifier, loaders {r['ours_loader'] / r['theirs_loader']:.2f}x"
        )
        if r["n"] < FULL:
            ratio = projected(r, rates)
            print(f"  projected at {FULL} images: {ratio:.2f}x end to end")
        print(f"  1.5x target: {'met' if ratio >= 1.5 else 'not met'}")
        table[-2]["ratio"] = ratio
    return table


def linear_probe(ours, folder: Path, args) -> dict[str, Any]:
    """Seconds of the linear-probe sweep on CIFAR-10 features."""
    _, train_folder = locate(extract_archive(args.train_tar), None)
    precision = "bf16" if args.device.startswith("cuda") else "fp32"
    data = {"kind": "folder", "path": str(train_folder), "num_workers": args.workers}
    probe = {"test_data": data | {"path": str(folder)}, "limit": args.probe_train,
             "test_limit": args.limit, "batch_size": args.batch_size, "precision": precision}  # fmt: skip
    start = time.perf_counter()
    out = evaluate_detailed("linear_probe", ours, probe, data)
    print(f"linear probe: {out.counts['train'] + out.counts['val']} train images, "
          f"features {out.details['feature_seconds']:.1f} s, sweep + final fit "
          f"{out.details['probe_seconds']:.1f} s ({len(out.details['sweep'])} fits), "
          f"acc1 {out.metrics['acc1']:.4f}, total {time.perf_counter() - start:.1f} s")  # fmt: skip
    return {"task": f"linear probe, {out.counts['train'] + out.counts['val']} train images",
            "engine": "clipforge", "acc1": out.metrics["acc1"],
            "seconds": time.perf_counter() - start}  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--pipeline-model", default=TINY,
                        help=f"architecture of the pipeline-bound row ({TINY}: a 2-layer "
                             "width-128 ViT-32 at 224; 'none' skips the row)")  # fmt: skip
    parser.add_argument("--limit", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--probe-train", type=int, default=10_000, help="0 skips the probe")
    parser.add_argument("--train-tar", type=Path, default=SHARED / "cifar10-train.tar.gz",
                        help="probe training images (a quick check may pass the test tar)")  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    test_tar = SHARED / "cifar10-test.tar.gz"
    for path in (test_tar, *([args.train_tar] if args.probe_train else [])):
        assert path.exists(), f"missing {path} (see ../shared/README.md)"
    _, folder = locate(extract_archive(test_tar), None)
    peak = matmul_peak(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        register_tiny(Path(tmp))  # the pipeline row's default, also usable as --model
        rows = [("model row", zeroshot_row(args.model, args.weights, folder, args))]
        if args.pipeline_model != "none":
            rows.append(("pipeline row", zeroshot_row(args.pipeline_model, None, folder, args)))
    table = print_rows(rows, max(peak, matmul_peak(args.device)), args)
    if args.probe_train:
        table.append(linear_probe(rows[0][1]["clipforge_model"], folder, args))
    write_result("evaluation", {"device": args.device, "matmul_peak_gflops": peak, "rows": table})


if __name__ == "__main__":
    main()
