"""Evaluation speed: clipforge's zero-shot harness vs CLIP_benchmark's runner, and the
linear-probe sweep, on CIFAR-10 from ../shared/data (extracted to a cache directory).

Zero-shot: the same model weights (open_clip builds ViT-B-32 with random weights, or loads
``--weights``; clipforge loads the same file), the same images (the CIFAR-10 test tar), the
same templates and class names, the same DataLoader workers. CLIP_benchmark's side is its
own ``zero_shot_classifier`` + ``run_classification`` over a torchvision ``ImageFolder``
with open_clip's preprocessing (what ``clip_benchmark eval`` runs). Prints images/s of
each and the ratio. Linear probe: features of ``--probe-train`` CIFAR-10 training images,
then the whole weight-decay sweep and the final fit, in seconds.

Usage: python benchmarks/evaluation.py [--limit N] [--model ViT-B-32] [--weights FILE]
       [--device cuda] [--workers 8] [--probe-train 10000] [--train-tar TAR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import clipforge
from clipforge.data.archive import extract_archive, locate
from clipforge.eval.classification import TEMPLATES_OF_CLASSNAMES
from clipforge.eval.datasets import builtin_classnames
from clipforge.eval.registry import evaluate_detailed
from clipforge.templates import get_templates

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


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


def clip_benchmark_zeroshot(ref, preprocess, folder: Path, limit: int, args) -> float:
    """Seconds of CLIP_benchmark's zero-shot runner (classifier + classification)."""
    import open_clip
    from clip_benchmark.metrics import zeroshot_classification as cb
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(str(folder), transform=preprocess)
    step = max(1, len(dataset) // limit)
    subset = torch.utils.data.Subset(dataset, list(range(0, len(dataset), step))[:limit])
    loader = torch.utils.data.DataLoader(subset, batch_size=args.batch_size,
                                         num_workers=args.workers)  # fmt: skip
    tokenizer = open_clip.get_tokenizer(args.model)
    amp = args.device.startswith("cuda")
    start = time.perf_counter()
    classifier = cb.zero_shot_classifier(ref, tokenizer, builtin_classnames("cifar10"),
                                         get_templates("cifar10"), args.device, amp=amp)  # fmt: skip
    cb.run_classification(ref, classifier, loader, args.device, amp=amp)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--limit", type=int, default=10_000)
    parser.add_argument("--probe-train", type=int, default=10_000)
    parser.add_argument("--train-tar", type=Path, default=SHARED / "cifar10-train.tar.gz",
                        help="probe training images (a quick check may pass the test tar)")  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    test_tar, train_tar = SHARED / "cifar10-test.tar.gz", args.train_tar
    for path in (test_tar, train_tar):
        assert path.exists(), f"missing {path} (see ../shared/README.md)"
    _, folder = locate(extract_archive(test_tar), None)
    ours, ref, preprocess = models(args.model, args.weights, args.device)
    precision = "bf16" if args.device.startswith("cuda") else "fp32"
    data = {"kind": "folder", "path": str(folder), "num_workers": args.workers}
    options = {"classnames": "cifar10", "limit": args.limit, "batch_size": args.batch_size,
               "precision": precision}  # fmt: skip
    start = time.perf_counter()
    result = evaluate_detailed("zeroshot_classification", ours, options, data)
    ours_s = time.perf_counter() - start
    n = result.counts["evaluated"]
    theirs_s = clip_benchmark_zeroshot(ref, preprocess, folder, n, args)
    print(f"zero-shot CIFAR-10, {args.model}, {n} images, {args.device}, templates "
          f"{TEMPLATES_OF_CLASSNAMES['cifar10']}: acc1 {result.metrics['acc1']:.4f}")  # fmt: skip
    print(f"  clipforge       {n / ours_s:9.1f} images/s")
    print(f"  CLIP_benchmark  {n / theirs_s:9.1f} images/s   (clipforge {theirs_s / ours_s:.2f}x)")
    _, train_folder = locate(extract_archive(train_tar), None)
    probe = {"test_data": data | {"path": str(folder)}, "limit": args.probe_train,
             "test_limit": args.limit, "batch_size": args.batch_size, "precision": precision}  # fmt: skip
    start = time.perf_counter()
    out = evaluate_detailed("linear_probe", ours, probe, {**data, "path": str(train_folder)})
    print(f"linear probe: {out.counts['train'] + out.counts['val']} train images, "
          f"features {out.details['feature_seconds']:.1f} s, sweep + final fit "
          f"{out.details['probe_seconds']:.1f} s ({len(out.details['sweep'])} fits), "
          f"acc1 {out.metrics['acc1']:.4f}, total {time.perf_counter() - start:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
