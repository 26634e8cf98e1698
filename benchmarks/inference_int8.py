"""int8 on the CPU, side by side in one run: ViT-B-32 image batch 32 and 256 text prompts.

Rows: clipforge int8 (torch.ao dynamic, per-channel), clipforge fp32, clipforge bf16
(what ``--precision auto`` picks on a CPU with AVX-512 BF16 / AMX), open_clip fp32,
onnxruntime fp32 (what immich and clip-as-service run) and onnxruntime int8 of the same
export (``clipforge export onnx --quantize int8``). Same random weights everywhere, same
threads, timed round-robin (``inference.interleaved_times``). Each row gives its speed-up
over open_clip fp32 (image) / clipforge fp32 (text) and its cosine to clipforge fp32 on
the same inputs. Random weights measure speed; the accuracy cost of a trained model is
in the tests (``tests/test_quantization_trained.py``).

Usage: python benchmarks/inference.py --int8-only [--reps N]
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipforge.onnx import OnnxClip, export_onnx
from clipforge.quantization import quantize
from clipforge.runtime import cpu_bf16_flags

Encoder = Callable[[Any], Any]


def _session_threads(bundle: OnnxClip, threads: int) -> OnnxClip:
    """Rebuild the bundle's sessions with ``threads`` intra-op threads (torch's count)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    for name in ("image_session", "text_session"):
        path = getattr(bundle, name)._model_path
        setattr(bundle, name, ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]))
    return bundle


def _bundles(ours, directory: Path) -> dict[str, OnnxClip]:
    threads = torch.get_num_threads()
    out = {}
    for kind in ("fp32", "int8"):
        path = export_onnx(ours, directory / kind, quantize=None if kind == "fp32" else kind)
        out[kind] = _session_threads(OnnxClip(path), threads)
    return out


def _engines(ours, ref, int8, bundles, tower: str) -> dict[str, Encoder]:
    image = tower == "image"
    torch_fn = (lambda m: m.encode_image) if image else (lambda m: m.encode_text)

    def onnx(bundle: OnnxClip) -> Encoder:
        fn = bundle.encode_image if image else bundle.encode_text
        return lambda x: torch.from_numpy(np.asarray(fn(x.numpy())))

    def bf16(x):
        with torch.autocast("cpu", torch.bfloat16):
            return torch_fn(ours)(x).float()

    return {
        "clipforge int8": torch_fn(int8),
        "clipforge fp32": torch_fn(ours),
        "clipforge bf16": bf16,
        "open_clip fp32": torch_fn(ref),
        "onnxruntime fp32": onnx(bundles["fp32"]),
        "onnxruntime int8": onnx(bundles["int8"]),
    }


def _tower_rows(task: str, unit: str, n: int, engines: dict[str, Encoder], inputs,
                baseline: str, reps: int, timer) -> list[dict[str, Any]]:  # fmt: skip
    def call(fn: Encoder) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode():
                return fn(inputs)

        return run

    with torch.inference_mode():
        reference = torch.nn.functional.normalize(engines["clipforge fp32"](inputs).float(), dim=-1)
        cosine = {
            label: torch.nn.functional.cosine_similarity(fn(inputs).float(), reference).min().item()
            for label, fn in engines.items()
        }
    times = timer({label: call(fn) for label, fn in engines.items()}, reps)
    rates = {label: n / seconds for label, seconds in times.items()}
    rows = []
    for label, rate in rates.items():
        rows.append({
            "task": task, "engine": label, "rate": f"{rate:,.1f} {unit}",
            "speed-up": f"{rate / rates[baseline]:.2f}x", "baseline": baseline,
            "min cosine vs fp32": f"{cosine[label]:.4f}",
        })  # fmt: skip
        print(f"{task:<26} {label:<18} {rate:8,.1f} {unit:<8} "
              f"{rate / rates[baseline]:.2f}x vs {baseline}  cos {cosine[label]:.4f}", flush=True)  # fmt: skip
    return rows


def int8_rows(models, prompts: list[str], reps: int, timer) -> dict[str, Any]:
    """The int8 table of ViT-B-32 (``models``: clipforge, open_clip and HF copies of the same
    random weights); ``timer``: ``interleaved_times``."""
    ours, ref, _ = models
    int8 = quantize(ours)
    report = int8.quantization_report
    print(f"clipforge int8: {report.summary()}; {report.modules}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        bundles = _bundles(ours, Path(tmp))
        onnx_report = bundles["int8"].quantization
        pixels = torch.randn(32, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        tokens = ours.tokenize((prompts * 3)[:256])
        rows = _tower_rows("image ViT-B-32 b32", "img/s", 32,
                           _engines(ours, ref, int8, bundles, "image"), pixels,
                           "open_clip fp32", reps, timer)  # fmt: skip
        rows += _tower_rows("text ViT-B-32 256 prompts", "texts/s", 256,
                            _engines(ours, ref, int8, bundles, "text"), tokens,
                            "clipforge fp32", reps, timer)  # fmt: skip
    return {
        "rows": rows,
        "cpu_bf16_flags": list(cpu_bf16_flags()),
        "clipforge_int8_report": report.to_dict(),
        "onnxruntime_int8_report": onnx_report,
        "reps": reps,
    }
