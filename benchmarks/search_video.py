"""Video rows of ``benchmarks/search.py``: text→moment recall@10 and indexing speed.

1. Moments: ``--video-count`` generated videos (default 30), each six procedural scenes
   (one shape, ``split="val"``: colour/shape pairs seen in training, scenes never seen) of
   2–8 s at 10 fps, 128×128, with a one-pixel camera shake and flicker inside a scene. Every
   scene is a query: its caption ("a small red circle"). A result counts when it is a video
   whose returned timestamp lies inside a scene with that caption; recall@10 is the share
   of queries with such a result among the first 10 (each video is one result, at its best
   frame). Measured for a model trained on procedural scenes (``--video-weights``, else
   trained here: examples/train_procedural_tiny.yaml, ``--video-steps``) and, as the
   chance line, for the same architecture with random weights.
2. Speed: ``Index.sync`` on those videos, and on one 1280×720 30 fps H.264 clip of
   ``--video-speed-s`` seconds (the same scenes scaled up; decoding dominates), in seconds
   of indexing per hour of video, with the trained tiny model and a random-weight ViT-B-32
   (the embedding cost of a real model; weights do not change speed).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import clipforge
from clipforge.data.procedural import caption_scene, render_scene, sample_scene

ROOT = Path(__file__).resolve().parents[1]
FPS = 10


def train_model(steps: int, output_dir: Path) -> Path:
    """The tiny procedural CLIP (single shapes) trained with ``clipforge.train``."""
    from clipforge.train import load_config, train

    overrides = [f"steps={steps}", f"checkpoint_every={steps}", "eval_every=0", "keep_last=1",
                 "log_every=100", f"output_dir={output_dir}"]  # fmt: skip
    cfg = load_config(ROOT / "examples" / "train_procedural_tiny.yaml", overrides)
    return Path(train(cfg, overwrite=True).last_checkpoint)


def write_scenes(
    path: Path, rng: np.random.Generator, scenes: int, size: tuple[int, int], fps: int,
    codec: str = "libx264",
) -> list[tuple[float, float, str]]:  # fmt: skip
    """A video of procedural scenes; ``(start, end, caption)`` of each."""
    import av

    out, frame_no = [], 0
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(scenes):
            spec = sample_scene(rng, "val", "single")
            base = np.asarray(render_scene(spec, 128, rng).resize(size), np.int16)
            frames = int(rng.integers(2 * fps, 8 * fps + 1))
            out.append((frame_no / fps, (frame_no + frames) / fps, caption_scene(spec)))
            for _ in range(frames):
                shake = np.roll(base, tuple(rng.integers(-1, 2, 2)), axis=(0, 1))
                pixels = np.clip(shake + rng.integers(-2, 3), 0, 255).astype(np.uint8)
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                frame.pts = frame_no
                frame_no += 1
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out


def moment_recall(index, truth: dict[str, list[tuple[float, float, str]]]) -> dict:
    """Recall@1/@10 of every scene's caption for a moment inside a scene with that caption."""
    queries = [caption for scenes in truth.values() for _, _, caption in scenes]
    at1 = at10 = 0
    for caption in queries:
        correct = [
            any(s <= h.timestamp < e and c == caption for s, e, c in truth[h.path])
            for h in index.search(caption, k=10)
            if h.timestamp is not None
        ]
        at1 += bool(correct[:1] and correct[0])
        at10 += any(correct)
    return {
        "queries": len(queries),
        "recall@1": at1 / len(queries),
        "recall@10": at10 / len(queries),
    }


def coverage(index, truth: dict[str, list[tuple[float, float, str]]]) -> float:
    """The share of scenes with at least one kept frame (the sampler's misses)."""
    kept: dict[str, list[float]] = {}
    for path, t in index.meta.db.execute(
        "SELECT images.path, frames.timestamp FROM frames JOIN images ON images.id = image_id"
    ):
        kept.setdefault(path, []).append(t)
    scenes = [(p, s, e) for p, rows in truth.items() for s, e, _ in rows]
    return sum(any(s <= t < e for t in kept.get(p, [])) for p, s, e in scenes) / len(scenes)


def _speed(model, folder: Path, db: Path) -> tuple[float, float, int]:
    """``(s per hour of video, video seconds, frames kept)`` of indexing ``folder``."""
    index = clipforge.Index.open(db, model)
    report = index.sync([folder], progress=False)
    frames = index.info()["video_frames"]
    return report.seconds_per_video_hour or 0.0, report.video_seconds, frames


def bench_video(args) -> list[dict]:
    """The video rows (see the module docstring)."""
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(2026)
    print(f"\n== video: {args.video_count} procedural videos, 10 fps, 128x128 ==")
    truth: dict[str, list] = {}
    for i in range(args.video_count):
        path = work / "videos" / f"v{i:03d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        truth[str(path)] = write_scenes(path, rng, 6, (128, 128), FPS)
    hours = sum(s[-1][1] for s in truth.values()) / 3600
    started = time.perf_counter()
    weights = args.video_weights or train_model(args.video_steps, work / "run")
    train_s = time.perf_counter() - started
    rows = []
    trained = clipforge.load(weights).eval()
    random_init = clipforge.create_model(trained.config).eval()
    for name, model in (("trained", trained), ("random weights (chance)", random_init)):
        s_per_hour, _, frames = _speed(model, work / "videos", work / f"db-{len(rows)}")
        index = clipforge.Index.open(work / f"db-{len(rows)}", model)
        recall = {**moment_recall(index, truth), "scenes with a frame": coverage(index, truth)}
        print(f"{name}: text->moment recall@1 {recall['recall@1']:.3f}, recall@10 "
              f"{recall['recall@10']:.3f} ({recall['queries']} queries, {frames} frames kept "
              f"of {hours * 3600 * FPS:.0f}, {recall['scenes with a frame']:.3f} of the scenes); indexing {s_per_hour:.0f} s per hour of video")  # fmt: skip
        rows.append({"task": f"video text->moment, {args.video_count} videos ({hours * 60:.1f} min)",
                     "index": f"tiny procedural CLIP, {name}", **recall,
                     "s per video hour": round(s_per_hour, 1), "frames kept": frames,
                     "model": str(args.video_weights or f"trained here: {args.video_steps} steps, {train_s:.0f} s")})  # fmt: skip
    rows += speed_rows(args, trained, work, rng)
    return rows


def speed_rows(args, tiny, work: Path, rng: np.random.Generator) -> list[dict]:
    """Seconds per hour of a 720p30 H.264 clip, tiny model and ViT-B-32."""
    folder = work / "hd"
    folder.mkdir()
    scenes = max(1, int(args.video_speed_s / 5))
    write_scenes(folder / "hd.mp4", rng, scenes, (1280, 720), 30)
    rows = []
    for name, model in (("tiny", tiny), ("ViT-B-32", clipforge.create_model("ViT-B-32").eval())):
        s_per_hour, seconds, frames = _speed(model, folder, work / f"hd-{name}")
        print(f"720p30 H.264, {seconds:.0f} s of video, {name}: {s_per_hour:.0f} s per hour of "
              f"video ({frames} frames kept, {torch.get_num_threads()} torch threads)")  # fmt: skip
        rows.append({"task": f"video indexing speed, 720p30 H.264 ({seconds:.0f} s)",
                     "index": name, "s per video hour": round(s_per_hour, 1),
                     "frames kept": frames})  # fmt: skip
    return rows
