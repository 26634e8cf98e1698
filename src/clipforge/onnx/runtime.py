"""CLIP inference with ONNX Runtime only: numpy + pillow + onnxruntime, no torch.

Preprocessing and tokenization are clipforge's own (bit-exact) pipelines, so results match
the PyTorch model (≤ 1e-4, tested).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..preprocess import PreprocessConfig, build_preprocess
from ..tokenizer import ClipTokenizer

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
        self.eot_token_id = meta.get("eot_token_id")
        self.preprocess_config = PreprocessConfig.from_dict(meta["preprocess"])
        self._preprocess = build_preprocess(self.preprocess_config)
        self._tokenizer = ClipTokenizer(context_length=self.context_length)

    def preprocess(self, image) -> np.ndarray:
        """A PIL image or path → float32 (3, H, W), identical to the PyTorch pipeline."""
        return self._preprocess.to_array(image)

    def tokenize(self, texts: str | Sequence[str], truncate: bool = True) -> np.ndarray:
        """Texts → (N, context_length) int64."""
        return self._tokenizer.to_array(texts, truncate=truncate)

    def encode_image(self, pixels: np.ndarray, normalize: bool = False) -> np.ndarray:
        """(N, 3, H, W) float32 → (N, D) features."""
        (out,) = self.image_session.run(None, {"pixels": np.asarray(pixels, dtype=np.float32)})
        return _normalize(out) if normalize else out

    def encode_text(self, tokens: np.ndarray, normalize: bool = False) -> np.ndarray:
        """(N, L) int64 token ids → (N, D) features (padding after the last EOT is skipped)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if self.eot_token_id is None:
            eot = tokens.argmax(axis=-1)
        else:
            eot = (tokens == self.eot_token_id).argmax(axis=-1)
        if len(tokens):
            tokens = tokens[:, : int(eot.max()) + 1]  # exact for a causal tower (EOT pooling)
        (out,) = self.text_session.run(None, {"tokens": tokens})
        return _normalize(out) if normalize else out

    def embed_images(self, images: Sequence, normalize: bool = True) -> np.ndarray:
        """Paths or PIL images → (N, D) features."""
        return self.encode_image(np.stack([self.preprocess(im) for im in images]), normalize)

    def embed_texts(self, texts: Sequence[str], normalize: bool = True) -> np.ndarray:
        """Texts → (N, D) features."""
        return self.encode_text(self.tokenize(texts), normalize)
