"""CLIP inference with ONNX Runtime only: numpy + pillow + onnxruntime, no torch.

Preprocessing and tokenization are clipforge's own (bit-exact) pipelines, with the model's
own tokenizer from the bundle (CLIP's BPE, or a SigLIP checkpoint's ``tokenizer.json``), so
results match the PyTorch model (≤ 1e-5, tested). Text is fed as the exported tower declared
(``text_input``): EOT-pooled causal towers get padding after the last EOT trimmed (exact and
faster), last-token-pooled towers (SigLIP) get the full padded context.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..errors import UsageError
from ..preprocess import PreprocessConfig, build_preprocess
from ..tokenizer.files import load_tokenizer

IMAGE_FILE, TEXT_FILE, META_FILE = "image_encoder.onnx", "text_encoder.onnx", "clipforge_onnx.json"


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class OnnxClip:
    """An exported model directory (see :func:`clipforge.onnx.export_onnx`)."""

    def __init__(self, directory: str | Path, providers: Sequence[str] | None = None) -> None:
        import onnxruntime as ort

        directory = Path(directory)
        meta_file = directory / META_FILE
        if not meta_file.is_file():
            raise FileNotFoundError(f"{meta_file} not found: is {directory} an ONNX export?")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        providers = list(providers or ["CPUExecutionProvider"])
        self.image_session = ort.InferenceSession(str(directory / IMAGE_FILE), providers=providers)
        self.text_session = ort.InferenceSession(str(directory / TEXT_FILE), providers=providers)
        self.context_length = int(meta["context_length"])
        # bundles written before every family exported: CLIP's EOT pooling and BPE
        legacy = {"pooling": "eot", "eot_token_id": meta.get("eot_token_id")}
        self.text_input: dict[str, Any] = meta.get("text_input", legacy)
        self.preprocess_config = PreprocessConfig.from_dict(meta["preprocess"])
        self._preprocess = build_preprocess(self.preprocess_config)
        #: the bundle's quantisation and its measured cosines vs fp32 (``None``: fp32)
        self.quantization: dict[str, Any] | None = meta.get("quantization")
        spec = meta.get("tokenizer", {"kind": "clip_bpe"})
        self._tokenizer = load_tokenizer(spec, directory) if spec is not None else None

    @property
    def eot_token_id(self) -> int | None:
        """The pooled token's id of an EOT-pooled text tower (``None``: argmax of the ids)."""
        return self.text_input.get("eot_token_id")

    def preprocess(self, image) -> np.ndarray:
        """A PIL image or path → float32 (3, H, W), identical to the PyTorch pipeline."""
        return self._preprocess.to_array(image)

    def tokenize(self, texts: str | Sequence[str], truncate: bool = True) -> np.ndarray:
        """Texts → (N, context_length) int64, with the exported model's own tokenizer."""
        if self._tokenizer is None:
            raise ValueError("this ONNX export carries no tokenizer: pass token ids to encode_text")
        return self._tokenizer.to_array(texts, self.context_length, truncate=truncate)

    def encode_image(self, pixels: np.ndarray, normalize: bool = False) -> np.ndarray:
        """(N, 3, H, W) float32 → (N, D) features."""
        pixels = np.asarray(pixels, dtype=np.float32)
        (out,) = self.image_session.run(["features"], {"pixels": pixels})
        out = cast(np.ndarray, out)  # a dense output (run() is typed for every output kind)
        return _normalize(out) if normalize else out

    def encode_text(self, tokens: np.ndarray, normalize: bool = False) -> np.ndarray:
        """(N, L) int64 token ids → (N, D) features (for EOT pooling, padding after the last
        EOT is skipped)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if self.text_input.get("pooling") == "eot" and len(tokens):
            eot_id = self.text_input.get("eot_token_id")
            eot = tokens.argmax(axis=-1) if eot_id is None else (tokens == eot_id).argmax(axis=-1)
            tokens = tokens[:, : int(eot.max()) + 1]  # exact for a causal tower (EOT pooling)
        (out,) = self.text_session.run(["features"], {"tokens": tokens})
        out = cast(np.ndarray, out)  # a dense output (run() is typed for every output kind)
        return _normalize(out) if normalize else out

    def encode_image_tokens(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(features (N, D), tokens (N, L, width))`` of a bundle exported with
        ``tokens=True``: the last block's tokens after the final norm, class token first."""
        self._need_tokens()
        pixels = np.asarray(pixels, dtype=np.float32)
        features, tokens = self.image_session.run(
            ["features", "token_features"], {"pixels": pixels}
        )
        # dense outputs (run() is typed for every output kind)
        return cast(np.ndarray, features), cast(np.ndarray, tokens)

    def encode_text_tokens(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(features (N, D), tokens (N, L, width))`` over the full given length (no trim)."""
        self._need_tokens()
        feed = {"tokens": np.asarray(tokens, dtype=np.int64)}
        features, out = self.text_session.run(["features", "token_features"], feed)
        # dense outputs (run() is typed for every output kind)
        return cast(np.ndarray, features), cast(np.ndarray, out)

    def _need_tokens(self) -> None:
        outputs = {o.name for o in self.image_session.get_outputs()}
        if "token_features" not in outputs:
            raise UsageError("this ONNX export has no token outputs: export it with --tokens")

    def embed_images(self, images: Sequence, normalize: bool = True) -> np.ndarray:
        """Paths or PIL images → (N, D) features."""
        return self.encode_image(np.stack([self.preprocess(im) for im in images]), normalize)

    def embed_texts(self, texts: Sequence[str], normalize: bool = True) -> np.ndarray:
        """Texts → (N, D) features."""
        return self.encode_text(self.tokenize(texts), normalize)
