"""Training speed and quality: clipforge's training engine vs open_clip's own (open_clip_train).

Part 1 trains the same tiny CLIP (a ViT on 32-px images) on a CIFAR-10 subset whose
captions come from the CIFAR-10 prompt templates, once with ``clipforge.train.train`` and
once with ``open_clip_train.main``, each in a fresh subprocess, from the same initial
weights, with the same CSV rows, batch, steps, AdamW settings, warm-up + cosine schedule,
seed and data-loader workers. open_clip's training crop (RandomResizedCrop) is set to scale
(1, 1), which on 32-px images returns the whole image unchanged, as clipforge's transform
does (``--open-clip-aug`` keeps open_clip's default). Samples/s come from each engine's own
per-step timer (data wait included), without the first ``--skip-steps``. Both final
checkpoints are scored by the same code: clipforge's ``ZeroShotClassifier`` on CIFAR-10
test images.

Part 2 times ViT-B-32 training steps at batch 32 (forward, ClipLoss, backward, AdamW step):
clipforge's step vs open_clip's model + ``open_clip.loss.ClipLoss``, each in a fresh
subprocess from the same random weights; samples/s and peak RSS.

Needs ../shared/data/cifar10-{train,test}.tar.gz (extracted into a temporary directory).
Usage: python benchmarks/training.py [--steps N] [--train-samples N] [--skip-vit] [--bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import os
import random
import re
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from results import write_result

SHARED = Path(__file__).resolve().parents[2] / "shared"
TINY = "clipforge-bench-tiny"
# embed_dim, image size, patch, vision width/layers/heads, text width/layers/heads, context
E, IMG, PATCH, VW, VL, VH, TW, TL, TH, CTX = 128, 32, 4, 192, 4, 3, 128, 4, 2, 77
TEXT = {"context_length": CTX, "vocab_size": 49408, "width": TW, "heads": TH, "layers": TL}
VISION = {"image_size": IMG, "patch_size": PATCH, "width": VW, "layers": VL}
OC_TINY = {"embed_dim": E, "vision_cfg": {**VISION, "head_width": VW // VH}, "text_cfg": TEXT}
CF_TINY = {"embed_dim": E, "vision": {"type": "vit", **VISION, "heads": VH}, "text": TEXT}
OC_LOG = re.compile(r"Train Epoch: .*?Batch \(t\): [\d.]+, ([\d.e+]+)/s.* Loss: ([\d.]+)")
Rows = list[tuple[str, str, int]]  # (image path, class name, image number)


def die(message: str) -> None:
    sys.exit(f"error: {message}")


def templates() -> list[str]:
    from clipforge.zeroshot import TEMPLATE_SETS

    return list(TEMPLATE_SETS["cifar10"])


# ----------------------------------------------------------------------------- data
def extract(split: str, per_class: int, dest: Path) -> Rows:
    """The images numbered below ``per_class`` of every class, extracted under ``dest``."""
    archive = SHARED / "data" / f"cifar10-{split}.tar.gz"
    if not archive.is_file():
        die(f"{archive} is missing (the shared CIFAR-10 archive; see ../shared/README.md)")
    rows, safe = [], {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 4 or not parts[3].endswith(".jpg"):
                continue
            if int(parts[3][:-4]) < per_class:
                tar.extract(member, dest, **safe)
                rows.append((str(dest / member.name), parts[2], int(parts[3][:-4])))
    counts = {c: sum(r[1] == c for r in rows) for c in {r[1] for r in rows}}
    if len(counts) != 10 or min(counts.values()) < per_class:
        die(f"{archive} has fewer than {per_class} images in some class: {counts}")
    return sorted(rows)


def write_csv(pool: Rows, n_rows: int, path: Path, seed: int) -> None:
    """``n_rows`` rows cycling through a seeded shuffle of ``pool``; template by image number."""
    pool, tmpl = list(pool), templates()
    random.Random(seed).shuffle(pool)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["filepath", "caption"])
        for k in range(n_rows):
            file, cls, number = pool[k % len(pool)]
            writer.writerow([file, tmpl[number % len(tmpl)].replace("{c}", cls)])


def make_init(tmp: Path, seed: int) -> float:
    """open_clip's random init, saved for both engines; returns the max feature difference."""
    import open_clip
    import torch

    import clipforge
    from clipforge.configs import ClipConfig

    (tmp / "oc_configs").mkdir()
    (tmp / "oc_configs" / f"{TINY}.json").write_text(json.dumps(OC_TINY), "utf-8")
    open_clip.add_model_config(tmp / "oc_configs")
    torch.manual_seed(seed)
    logging.getLogger().setLevel(logging.ERROR)  # "no pretrained weights loaded": intended
    oc = open_clip.create_model(TINY).eval()
    torch.save(oc.state_dict(), tmp / "init.pt")
    cf = clipforge.load(ClipConfig.from_dict(CF_TINY), weights=tmp / "init.pt")
    clipforge.save(cf, tmp / "init_clipforge")
    images = torch.randn(8, 3, IMG, IMG)
    tokens = cf.tokenize([t.replace("{c}", "cat") for t in templates()[:8]])
    with torch.no_grad():
        d_img = (oc.encode_image(images) - cf.encode_image(images)).abs().max()
        d_txt = (oc.encode_text(tokens) - cf.encode_text(tokens)).abs().max()
    return float(max(d_img, d_txt))


# ----------------------------------------------------------------------------- training runs
def run(cmd: list[str], what: str) -> tuple[str, float]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        die(f"{what} failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc.stdout, time.perf_counter() - start


def run_worker(spec: dict, what: str) -> tuple[str, float]:
    return run([sys.executable, __file__, "--worker", json.dumps(spec)], what)


def throughput(times: list[float], batch: int, skip: int) -> float:
    """Samples/s over the per-step times after the first ``skip`` steps."""
    kept = times[skip:] or times
    return batch * len(kept) / sum(kept)


def train_clipforge(args: argparse.Namespace, tmp: Path, data: Path) -> dict:
    out = tmp / "clipforge_run"
    config = {
        "model": {"init_from": str(tmp / "init_clipforge")},
        "data": {"kind": "csv", "path": str(data), "num_workers": args.workers,
                 "options": {"image_column": "filepath", "caption_column": "caption"}},
        "optim": {"lr": args.lr, "weight_decay": args.wd, "betas": [0.9, 0.98], "eps": 1e-6,
                  "warmup_steps": args.warmup, "schedule": "cosine"},
        "steps": args.steps, "batch_size": args.batch_size, "precision": "fp32",
        "seed": args.seed, "output_dir": str(out), "checkpoint_every": args.steps,
        "keep_last": 1, "log_every": 1, "device": "cpu", "progress": False, "tensorboard": False,
    }  # fmt: skip
    _, wall = run_worker({"kind": "clipforge-train", "config": config}, "clipforge training")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if r.get("event") == "train"]
    return {"times": [args.batch_size / r["samples_per_s"] for r in records],
            "losses": [r["loss"] for r in records], "wall": wall,
            "ckpt": out / f"step_{args.steps}"}  # fmt: skip


def train_open_clip(args: argparse.Namespace, tmp: Path, data: Path) -> dict:
    logs = tmp / "open_clip_logs"
    code = (
        f"import sys, open_clip; open_clip.add_model_config({str(tmp / 'oc_configs')!r}); "
        "from open_clip_train.main import main; main(sys.argv[1:])"
    )
    cmd = [
        sys.executable, "-c", code, "--train-data", str(data), "--dataset-type", "csv",
        "--csv-separator", ",", "--csv-img-key", "filepath", "--csv-caption-key", "caption",
        "--model", TINY, "--pretrained", str(tmp / "init.pt"), "--batch-size",
        str(args.batch_size), "--epochs", "1", "--lr", str(args.lr), "--wd", str(args.wd),
        "--beta1", "0.9", "--beta2", "0.98", "--eps", "1e-6", "--warmup", str(args.warmup),
        "--workers", str(args.workers), "--seed", str(args.seed), "--logs", str(logs),
        "--name", "run", "--device", "cpu", "--precision", "fp32", "--log-every-n-steps", "1",
        "--save-frequency", "1", "--zeroshot-frequency", "0", "--report-to", "",
    ]  # fmt: skip
    if not args.open_clip_aug:
        cmd += ["--aug-cfg", "scale=(1.0,1.0)"]
    _, wall = run(cmd, "open_clip training")
    matches = [OC_LOG.search(x) for x in (logs / "run" / "out.log").read_text().splitlines()]
    matches = [m for m in matches if m]
    if len(matches) != args.steps:
        die(f"parsed {len(matches)} step lines from open_clip's log, expected {args.steps}")
    return {"times": [args.batch_size / float(m[1]) for m in matches],
            "losses": [float(m[2]) for m in matches], "wall": wall,
            "ckpt": logs / "run" / "checkpoints" / "epoch_1.pt"}  # fmt: skip


def zero_shot(model, rows: Rows, classes: list[str]) -> float:
    import numpy as np

    import clipforge

    clf = clipforge.ZeroShotClassifier(model, classes, templates="cifar10")
    result = clf.predict([r[0] for r in rows], batch_size=250, progress=False)
    if result.failures:
        die(f"unreadable test images: {result.failures[:3]}")
    labels = np.array([classes.index(rows[i][1]) for i in result.indices])
    return float((result.predictions == labels).mean())


# ----------------------------------------------------------------------------- ViT-B-32
def rss_mib() -> float:
    """Current resident set size (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


def vit_steps(spec: dict) -> dict:
    """Worker: one warm-up then ``spec['steps']`` timed ViT-B-32 training steps."""
    import torch

    batch, tmpl = spec["batch"], templates()
    torch.manual_seed(0)
    images = torch.randn(batch, 3, 224, 224)
    captions = [tmpl[i % len(tmpl)].replace("{c}", spec["classes"][i % 10]) for i in range(batch)]
    autocast = contextlib.nullcontext
    if spec["precision"] == "bf16":
        autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    if spec["engine"] == "clipforge":
        import clipforge
        from clipforge.losses import ClipLoss, clamp_logit_scale_
        from clipforge.train.gradcache import ContrastiveModel, contrastive_step
        from clipforge.train.optim import build_optimizer
        from clipforge.train.train_config import OptimConfig

        clip = clipforge.load("ViT-B-32", weights=spec["ckpt"]).train()
        model, tokens, loss_fn = ContrastiveModel(clip), clip.tokenize(captions), ClipLoss()
        opt = build_optimizer(model, OptimConfig(lr=5e-4, weight_decay=0.2))

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            contrastive_step(model, loss_fn, images, tokens, autocast=autocast)
            opt.step()
            clamp_logit_scale_(clip)

    else:
        import open_clip

        oc = open_clip.create_model("ViT-B-32", output_dict=True)
        oc.load_state_dict(torch.load(spec["ckpt"], map_location="cpu"))
        oc.train()
        tokens, oc_loss = open_clip.get_tokenizer("ViT-B-32")(captions), open_clip.loss.ClipLoss()
        keys = ("bn", "ln", "bias", "logit_scale")  # open_clip_train.main's no-decay rule
        split: dict[bool, list] = {True: [], False: []}
        for n, param in oc.named_parameters():
            split[param.ndim < 2 or any(k in n for k in keys)].append(param)
        groups = [{"params": split[True], "weight_decay": 0.0}, {"params": split[False]}]
        opt = torch.optim.AdamW(groups, lr=5e-4, weight_decay=0.2, betas=(0.9, 0.98), eps=1e-6)

        def step() -> None:  # open_clip_train.train.train_one_epoch, fp32/amp path
            opt.zero_grad()
            with autocast():
                loss = oc_loss(**oc(images, tokens))
            loss.backward()
            opt.step()
            with torch.no_grad():
                oc.logit_scale.clamp_(0, math.log(100))

    rss_before = rss_mib()
    step()
    start = time.perf_counter()
    for _ in range(spec["steps"]):
        step()
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"samples_per_s": batch * spec["steps"] / elapsed, "peak": peak, "before": rss_before}


def vit_section(args: argparse.Namespace, tmp: Path, classes: list[str]) -> list[dict]:
    import open_clip
    import torch

    torch.manual_seed(args.seed)
    torch.save(open_clip.create_model("ViT-B-32").state_dict(), tmp / "vit_b32.pt")
    print(f"\nViT-B-32 training step at batch {args.vit_batch}: forward + ClipLoss + backward + "
          f"AdamW; 224-px random images, CIFAR captions; same random init (seed {args.seed}); "
          f"fresh process per row, 1 warm-up step then the timed steps\n"
          f"{'precision':<10}{'engine':<11}{'steps':>6}{'samples/s':>11}{'ratio':>8}"
          f"{'peak RSS MiB':>14}{'growth in steps':>17}")  # fmt: skip
    rows = []
    for precision in ["fp32"] + (["bf16"] if args.bf16 else []):
        steps = args.vit_steps if precision == "fp32" else 1
        results = {}
        for engine in ("clipforge", "open_clip"):
            spec = {"kind": "vit", "engine": engine, "precision": precision, "steps": steps,
                    "batch": args.vit_batch, "ckpt": str(tmp / "vit_b32.pt"),
                    "classes": classes}  # fmt: skip
            out, _ = run_worker(spec, f"{engine} ViT-B-32 {precision}")
            results[engine] = json.loads(out.strip().splitlines()[-1])
        for engine, r in results.items():
            ratio = r["samples_per_s"] / results["open_clip"]["samples_per_s"]
            print(f"{precision:<10}{engine:<11}{steps:>6}{r['samples_per_s']:>11.2f}{ratio:>7.2f}x"
                  f"{r['peak']:>14.0f}{r['peak'] - r['before']:>17.0f}")  # fmt: skip
            rows.append({"task": f"ViT-B-32 train step, batch {args.vit_batch}, {precision}",
                         "engine": engine, "samples/s": r["samples_per_s"], "ratio": ratio,
                         "peak RSS MiB": r["peak"]})  # fmt: skip
    from clipforge.models.bf16_cpu import cpu_has_bf16_arithmetic

    if not cpu_has_bf16_arithmetic():
        print("this CPU has no AVX512-BF16/AMX: torch (open_clip) runs bf16 matmuls in a slow "
              "fallback; clipforge runs them as bf16-rounded operands in fp32 kernels "
              "(clipforge.models.bf16_cpu)")  # fmt: skip
    if not args.bf16:
        print("bf16 autocast not run (--bf16 adds it, 1 timed step)")
    return rows


# ----------------------------------------------------------------------------- report
def report_tiny(
    args, cf: dict, oc: dict, accs: tuple, n_pool: int, n_test: int, diff: float
) -> list[dict]:
    import torch

    skip = min(args.skip_steps, args.steps - 1)
    crop = "default RandomResizedCrop(scale 0.9-1)" if args.open_clip_aug else "scale (1, 1)"
    print(f"\nTiny CLIP on CIFAR-10, CPU fp32, {torch.get_num_threads()} torch threads, "
          f"seed {args.seed}: ViT {IMG}px/p{PATCH} width {VW} x{VL} ({VH} heads), text width "
          f"{TW} x{TL} ({TH} heads, context {CTX}), embed {E}\n"
          f"{args.steps} steps x batch {args.batch_size} = {args.steps * args.batch_size} "
          f"samples drawn from {n_pool} train images; AdamW lr {args.lr:g} wd {args.wd:g} betas "
          f"(0.9, 0.98) eps 1e-6, {args.warmup} warm-up steps then cosine; {args.workers} loader "
          f"worker(s); identical initial weights (max feature diff {diff:.1e})\n"
          f"train crop: open_clip {crop}, clipforge resize + centre crop (identity at 32 px)\n"
          f"samples/s: steps {skip + 1}-{args.steps} of each engine's own step timer (data wait "
          f"included); loss: mean of the last 10 steps; zero-shot: clipforge's classifier, "
          f"18 CIFAR-10 templates, {n_test} test images, for both checkpoints\n"
          f"\n{'':<17}{'samples/s':>10}{'ratio':>8}{'wall s':>8}{'final loss':>12}  "
          f"zero-shot top-1")  # fmt: skip
    rate = [throughput(r["times"], args.batch_size, skip) for r in (cf, oc)]
    engines = zip(("clipforge", "open_clip"), (cf, oc), rate, accs[1:], strict=True)
    rows = []
    for label, r, sps, acc in engines:
        loss = sum(r["losses"][-10:]) / len(r["losses"][-10:])
        rows.append({"task": f"tiny CLIP on CIFAR-10, seed {args.seed}", "engine": label,
                     "samples/s": sps, "ratio": sps / rate[1], "wall s": r["wall"],
                     "final loss": loss, "zero-shot top-1": f"{acc:.2%}"})  # fmt: skip
        print(f"{label:<17}{sps:>10.1f}{sps / rate[1]:>7.2f}x{r['wall']:>8.0f}{loss:>12.4f}  "
              f"{acc:.2%}")  # fmt: skip
    print(f"{'initial weights':<17}{'':>38}  {accs[0]:.2%}\nclipforge/open_clip samples/s: "
          f"{rate[0] / rate[1]:.2f}x; top-1 {100 * (accs[1] - accs[2]):+.1f} points (chance 10%)\n"
          "notes: clipforge's text tower skips the padding after the batch's longest caption "
          "(exact), open_clip runs all 77 positions; the engines shuffle the same rows in "
          "different orders, so accuracy differs run to run by a few points at this "
          "scale")  # fmt: skip
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=150, help="optimizer steps (both engines)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--train-samples", type=int, default=10_000, help="CIFAR-10 train pool")
    p.add_argument("--test-samples", type=int, default=2_000, help="CIFAR-10 test images")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--workers", type=int, default=1, help="data-loader workers (both engines)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-steps", type=int, default=5, help="first steps left out of samples/s")
    p.add_argument("--open-clip-aug", action="store_true", help="open_clip's default crop")
    p.add_argument("--skip-vit", action="store_true", help="skip the ViT-B-32 section")
    p.add_argument("--skip-tiny", action="store_true", help="skip the CIFAR-10 training run")
    p.add_argument("--vit-steps", type=int, default=2, help="timed ViT-B-32 fp32 steps")
    p.add_argument("--vit-batch", type=int, default=32)
    p.add_argument("--bf16", action="store_true", help="also bf16 autocast (1 timed step)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:  # a fresh process for one engine's run
        spec = json.loads(args.worker)
        if spec["kind"] == "clipforge-train":
            from clipforge.train.loop import train
            from clipforge.train.train_config import config_from_dict

            train(config_from_dict(spec["config"]))
        else:
            print(json.dumps(vit_steps(spec)))
        return
    for name in ("train_samples", "test_samples"):
        if getattr(args, name) % 10:
            p.error(f"--{name.replace('_', '-')} must be a multiple of 10 (balanced classes)")
    if not 10 <= args.train_samples <= 50_000 or not 10 <= args.test_samples <= 10_000:
        p.error("--train-samples must be in [10, 50000] and --test-samples in [10, 10000]")
    if args.steps < 1 or args.batch_size < 1 or args.vit_steps < 1:
        p.error("--steps, --batch-size and --vit-steps must be >= 1")
    import clipforge

    start, load = time.perf_counter(), os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.1f} at start: other processes share the CPU and "
              "distort the timings (rerun on an idle machine)")  # fmt: skip
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="clipforge-train-bench-") as name:
        tmp = Path(name)
        pool = extract("train", args.train_samples // 10, tmp)
        test = extract("test", args.test_samples // 10, tmp)
        classes = sorted({r[1] for r in test})
        if not args.skip_tiny:
            data = tmp / "train.csv"
            write_csv(pool, args.steps * args.batch_size, data, args.seed)
            diff = make_init(tmp, args.seed)
            cf = train_clipforge(args, tmp, data)
            oc = train_open_clip(args, tmp, data)
            init_model = clipforge.load(tmp / "init_clipforge")
            accs = (
                zero_shot(init_model, test, classes),
                zero_shot(clipforge.load(cf["ckpt"]), test, classes),
                zero_shot(clipforge.load(init_model.config, weights=oc["ckpt"]), test, classes),
            )
            rows += report_tiny(args, cf, oc, accs, len(pool), len(test), diff)
        if not args.skip_vit:
            rows += vit_section(args, tmp, classes)
    print(f"\ntotal benchmark time {time.perf_counter() - start:.0f} s")
    write_result("training", {"rows": rows})


if __name__ == "__main__":
    main()
