"""The CLIP model: an image tower and a text tower projected into one space."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import ClipConfig
from ..configs.model_config import DEFAULT_TEXT_TYPE
from ..preprocess import NaFlexPatches, PreprocessConfig, image_transform
from ..tokenizer import get_tokenizer
from . import (  # noqa: F401  (register the towers)
    fastvit,
    m2m100_text,
    mobileclip_vit,
    resnet,
    roberta_text,
    siglip_naflex,
    siglip_text,
    siglip_vision,
    t5_text,
    text as _text,  # noqa: F401  (registers the causal text tower)
    vit,
)
from .bf16_cpu import bf16_cpu_context
from .intermediates import Indices, Intermediates
from .tower import Tower, TowerSettings, build_tower

Towers = Literal["both", "image", "text"]


class CLIP(nn.Module):
    """Two towers plus a learnable temperature (``logit_scale``) and, for SigLIP
    architectures (``config.init_logit_bias`` set), a learnable ``logit_bias``.

    ``towers="image"`` or ``"text"`` builds only that tower: the other is never allocated.
    """

    def __init__(
        self,
        config: ClipConfig,
        towers: Towers = "both",
        preprocess_config: PreprocessConfig | None = None,
    ) -> None:
        super().__init__()
        if towers not in ("both", "image", "text"):
            raise ValueError(f"towers must be 'both', 'image' or 'text', got {towers!r}")
        self.config = config
        self.towers = towers
        settings = TowerSettings(config.embed_dim, config.activation, config.norm_eps)
        self.visual: Tower | None = (
            build_tower(config.vision, settings) if towers != "text" else None
        )
        self.text: Tower | None = build_tower(config.text, settings) if towers != "image" else None
        self.logit_scale = nn.Parameter(torch.tensor(config.init_logit_scale))
        self.logit_bias: nn.Parameter | None = None
        if config.init_logit_bias is not None:
            self.logit_bias = nn.Parameter(torch.tensor(float(config.init_logit_bias)))
        self.preprocess_config = preprocess_config or PreprocessConfig(
            image_size=config.vision.image_size
        )
        self._preprocess = image_transform(self.preprocess_config)
        self._tokenizer = None

    def tower(self, name: str) -> Tower:
        """The ``"image"`` or ``"text"`` tower (an error if this model was built without it)."""
        if name not in ("image", "text"):
            raise ValueError(f"tower name must be 'image' or 'text', got {name!r}")
        tower = self.visual if name == "image" else self.text
        if tower is None:
            raise RuntimeError(
                f"this model was loaded with towers={self.towers!r}: no {name} tower"
            )
        return tower

    def encode_image(
        self, pixels: torch.Tensor | NaFlexPatches, normalize: bool = False
    ) -> torch.Tensor:
        """(N, 3, H, W) float pixels (or, for SigLIP 2 NaFlex, a :class:`NaFlexPatches`
        batch) → (N, embed_dim) features."""
        with bf16_cpu_context(pixels.patches if isinstance(pixels, NaFlexPatches) else pixels):
            features = self.tower("image")(pixels)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """(N, context) int token ids → (N, embed_dim) features."""
        with bf16_cpu_context(tokens):
            features = self.tower("text")(tokens)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(
        self, pixels: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised image and text features and ``exp(logit_scale)``."""
        return (
            self.encode_image(pixels, normalize=True),
            self.encode_text(tokens, normalize=True),
            self.logit_scale.exp(),
        )

    def forward_intermediates(
        self,
        image: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        image_indices: Indices = None,
        text_indices: Indices = None,
        stop_early: bool = False,
        normalize: bool = True,
        normalize_intermediates: bool = False,
        intermediates_only: bool = False,
        image_output_fmt: str = "NCHW",
        image_output_extra_tokens: bool = False,
        text_output_fmt: str = "NLC",
        text_output_extra_tokens: bool = False,
        output_logits: bool = False,
        output_logit_scale_bias: bool = False,
    ) -> Intermediates:
        """open_clip 3.x's ``CLIP.forward_intermediates``: per-block tokens of either tower and
        the final features from the same pass (see :meth:`Tower.forward_intermediates`).

        Keys: ``image_intermediates`` (``image_intermediates_prefix`` with extra tokens),
        ``image_features``, ``text_intermediates``, ``text_features``; ``image_logits`` /
        ``text_logits`` with ``output_logits``; ``logit_scale`` (and ``logit_bias``) with
        ``output_logit_scale_bias``. ``intermediates_only`` turns off ``normalize`` and
        logits. ``stop_early`` applies to both towers.
        """
        if intermediates_only:
            normalize, output_logits = False, False
        if output_logits and (image is None or text is None):
            raise ValueError("output_logits needs both image and text inputs")
        out: Intermediates = {}
        runs = [(image, "image", image_indices, image_output_fmt, image_output_extra_tokens),
                (text, "text", text_indices, text_output_fmt, text_output_extra_tokens)]  # fmt: skip
        for inputs, name, indices, fmt, extra in runs:
            if inputs is None:
                continue
            with bf16_cpu_context(inputs):
                tower_out = self.tower(name).forward_intermediates(
                    inputs, indices=indices, stop_early=stop_early,
                    normalize_intermediates=normalize_intermediates,
                    intermediates_only=intermediates_only, output_fmt=fmt,
                    output_extra_tokens=extra,
                )  # fmt: skip
            key = f"{name}_features"
            if normalize and key in tower_out:
                tower_out[key] = F.normalize(tower_out[key], dim=-1)
            out.update(tower_out)
        if output_logits or output_logit_scale_bias:
            scale = self.logit_scale.exp()
            if output_logits:
                # the "*_features" entries are single tensors (only intermediates are lists)
                image_features = cast(torch.Tensor, out["image_features"])
                text_features = cast(torch.Tensor, out["text_features"])
                logits = scale * image_features @ text_features.T
                if self.logit_bias is not None:
                    logits = logits + self.logit_bias
                out["image_logits"], out["text_logits"] = logits, logits.T
            if output_logit_scale_bias:
                out["logit_scale"] = scale
                if self.logit_bias is not None:
                    out["logit_bias"] = self.logit_bias
        return out

    def preprocess(self, image) -> torch.Tensor | NaFlexPatches:
        """A PIL image (or path) → (3, H, W) tensor, with this checkpoint's preprocessing
        (a one-image :class:`NaFlexPatches` for NaFlex preprocessing)."""
        return self._preprocess(image)

    @property
    def image_transform(self) -> Callable[..., torch.Tensor | NaFlexPatches]:
        """The picklable preprocessing callable (for DataLoader workers)."""
        return self._preprocess

    def tokenize(self, texts: str | Sequence[str], truncate: bool = True) -> torch.Tensor:
        """Texts → (N, context_length) int64 token ids, with this checkpoint's tokenizer
        (CLIP's BPE unless :meth:`set_tokenizer` gave another)."""
        return self.get_tokenizer()(
            texts, context_length=self.config.text.context_length, truncate=truncate
        )

    def get_tokenizer(self) -> Callable[..., torch.Tensor]:
        """The tokenizer :meth:`tokenize` calls: the checkpoint's own (:meth:`set_tokenizer`;
        loaded with SigLIP checkpoints that ship ``tokenizer.json``) or CLIP's BPE."""
        if self._tokenizer is None:
            if self.config.text.type != DEFAULT_TEXT_TYPE:  # e.g. SigLIP's SentencePiece
                raise ValueError(
                    f"a {self.config.text.type!r} text tower needs its checkpoint's own "
                    "tokenizer (tokenizer.json or spiece.model; this checkpoint ships neither): "
                    "model.set_tokenizer(SentencePieceTokenizer.from_dir(path)), or pass "
                    "token ids to encode_text"
                )

            self._tokenizer = get_tokenizer()
        return self._tokenizer

    def set_tokenizer(self, tokenizer: Callable[..., torch.Tensor]) -> None:
        """Make :meth:`tokenize` use ``tokenizer``, called as
        ``tokenizer(texts, context_length=..., truncate=...)`` (e.g. a SigLIP checkpoint's
        :class:`~clipforge.tokenizer.sentencepiece.SentencePieceTokenizer`)."""
        self._tokenizer = tokenizer

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Trade compute for memory in both towers."""
        for tower in self.present_towers():
            tower.set_grad_checkpointing(enable)

    def reparameterize(self) -> CLIP:
        """Fold every tower's training-time branches into single convolutions (MobileCLIP's
        FastViT; timm's ``reparameterize_model``), in place: the same function, faster. A
        no-op for towers without such branches. Returns the model."""
        for tower in self.present_towers():
            tower.reparameterize()
        return self

    def present_towers(self) -> list[Tower]:
        """The towers this model was built with (image first)."""
        return [t for t in (self.visual, self.text) if t is not None]

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts: image tower, text tower (incl. projections) and total."""
        count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
        return {
            "image": count(self.visual),
            "text": count(self.text),
            "total": sum(p.numel() for p in self.parameters()),
        }
