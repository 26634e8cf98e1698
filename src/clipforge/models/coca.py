"""CoCa (open_clip's ``coca_*``): an image tower and a text tower that also hand their tokens
to a multimodal text decoder, which predicts the caption's next token.

Parameter names are open_clip's (``visual.attn_pool.*``, ``text.cls_emb``,
``text_decoder.resblocks.*`` / ``text_decoder.cross_attn.*``), so its CoCa checkpoints load
without renaming. See :mod:`clipforge.configs.coca` for the configurations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import ClipConfig, ConfigError
from ..configs.coca import CocaTextConfig, CocaVisionConfig, MultimodalDecoderConfig
from ..tokenizer import get_tokenizer
from .clip import CLIP, Towers
from .coca_generate import GenerationOptions, generate_tokens
from .intermediates import (
    Intermediates,
    IntermediatesRequest,
    TokenPass,
    image_grid,
    token_intermediates,
)
from .layers import (
    ResidualAttentionBlock,
    SelfAttention,
    Transformer,
    embedding_for_init,
    init_scaled_normal_,
)
from .tower import Tower, TowerSettings, TransformerTower, register_tower
from .vit import ClassTokenViT

TokenOutput = tuple[torch.Tensor, torch.Tensor]  # (pooled features, tokens for the decoder)


class AttentionalPooler(nn.Module):
    """open_clip's ``AttentionalPooler``: learned queries attend to the (normed) tokens."""

    def __init__(self, width: int, context: int, heads: int, queries: int, eps: float) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(queries, width))
        self.attn = nn.MultiheadAttention(width, heads, kdim=context, vdim=context, batch_first=True)
        self.ln_q = nn.LayerNorm(width, eps=eps)
        self.ln_k = nn.LayerNorm(context, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_k(x)
        q = self.ln_q(self.query).unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.attn(q, x, x, need_weights=False)[0]


@register_tower(CocaVisionConfig)
class CocaVisionTransformer(ClassTokenViT):
    """open_clip's ``VisionTransformer`` with ``output_tokens``: with ``attentional_pool`` the
    learned queries' outputs after ``ln_post`` are split into the embedding (first query,
    projected) and the decoder's tokens (the rest); without it, the class token and the
    patch tokens after ``ln_post``."""

    head_names = ("attn_pool", "ln_post", "proj")

    def __init__(self, cfg: CocaVisionConfig, settings: TowerSettings) -> None:
        super().__init__(cfg, settings)
        embed_dim = settings.embed_dim
        self.attn_pool: AttentionalPooler | None = None
        if cfg.attentional_pool:
            self.attn_pool = AttentionalPooler(
                embed_dim, cfg.width, cfg.attn_pooler_heads, cfg.attn_pooler_queries,
                self.norm_eps,
            )  # fmt: skip
        pool_dim = embed_dim if cfg.attentional_pool else cfg.width
        self.token_dim = pool_dim
        self.ln_post = nn.LayerNorm(pool_dim, eps=self.norm_eps)
        self.proj = nn.Parameter(torch.empty(pool_dim, embed_dim))
        self.init_weights()

    def _width_scaled_params(self) -> list[nn.Parameter]:
        return [*super()._width_scaled_params(), self.proj]

    def _head(self, x: torch.Tensor) -> TokenOutput:
        x = self.ln_post(self.attn_pool(x) if self.attn_pool is not None else x)
        return x[:, 0] @ self.proj, x[:, 1:]

    def forward_tokens(self, pixels: torch.Tensor) -> TokenOutput:
        """``(embedding (N, embed_dim), decoder tokens (N, T, token_dim))``."""
        return self._head(self.transformer(self._tokens(pixels)))

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """The pooler's query outputs (or every token) after ``ln_post``."""
        x = self.transformer(self._tokens(inputs))
        return self.ln_post(self.attn_pool(x) if self.attn_pool is not None else x)

    def token_pass(self, inputs: torch.Tensor) -> TokenPass:
        """Block outputs (class token as the prefix) and ``forward``'s features."""
        return TokenPass(
            self.transformer.steps(),
            self._tokens(inputs),
            kind="image",
            norm=self.ln_post,
            pool=lambda x: self._head(x)[0],
            num_prefix=1,
            grid=image_grid(inputs, self.conv1.kernel_size[0]),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(pixels)[0]


@register_tower(CocaTextConfig)
class CocaTextTransformer(TransformerTower):
    """open_clip's ``TextTransformer`` with ``embed_cls`` and ``output_tokens``: a class token
    appended after the ids, causal attention with padding keys masked, the embedding
    ``ln_final(x[:, -1]) @ text_projection``; the decoder reads ``x[:, :-1]`` (no norm)."""

    default_output_fmt = "NLC"
    transformer: Transformer
    head_names = ("ln_final", "text_projection")

    def __init__(self, cfg: CocaTextConfig, settings: TowerSettings) -> None:
        super().__init__()
        activation, eps = settings.for_tower(cfg.activation, cfg.norm_eps)
        self.context_length, self.vocab_size = cfg.context_length, cfg.vocab_size
        self.pad_id, self.correct_cls_mask = cfg.pad_id, cfg.correct_cls_mask
        self.output_dim = settings.embed_dim
        self.token_dim = cfg.width
        self.token_embedding = embedding_for_init(cfg.vocab_size, cfg.width)
        self.cls_emb = nn.Parameter(torch.empty(cfg.width))
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length + 1, cfg.width))
        self.transformer = Transformer(
            cfg.width, cfg.layers, cfg.heads, cfg.mlp_width, activation, eps
        )  # causal through the mask, which also masks padding
        self.ln_final = nn.LayerNorm(cfg.width, eps=eps)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, settings.embed_dim))
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.cls_emb, std=0.01)
        self.transformer.init_weights()
        init_scaled_normal_(self.text_projection, self.text_projection.shape[0])

    def _embed(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Block inputs ``(N, L + 1, width)`` and the boolean attention mask (True = attend)."""
        if tokens.ndim != 2 or tokens.shape[1] > self.context_length:
            raise ValueError(
                f"tokens must be (batch, length <= {self.context_length}), "
                f"got shape {tuple(tokens.shape)}"
            )
        x = self.token_embedding(tokens)
        x = torch.cat([x, self.cls_emb.to(x.dtype).expand(x.shape[0], 1, -1)], dim=1)
        length = x.shape[1]
        x = x + self.positional_embedding[:length].to(x.dtype)
        valid = tokens != self.pad_id
        always = valid.new_ones(valid.shape[0], 1)
        # open_clip's released weights mask one position late (the class token's slot first)
        keys = torch.cat([valid, always] if self.correct_cls_mask else [always, valid], dim=1)
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        return x, (causal & keys[:, None, :])[:, None]

    def forward_tokens(self, tokens: torch.Tensor) -> TokenOutput:
        """``(embedding (N, embed_dim), decoder tokens (N, L, width))``."""
        x, mask = self._embed(tokens)
        x = self.transformer(x, attn_mask=mask)
        return self.ln_final(x[:, -1]) @ self.text_projection, x[:, :-1]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(tokens)[0]

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """Every position (the class token last) after ``ln_final``."""
        x, mask = self._embed(inputs)
        return self.ln_final(self.transformer(x, attn_mask=mask))

    def token_pass(self, inputs: torch.Tensor) -> TokenPass:
        x, mask = self._embed(inputs)
        return TokenPass(
            self.transformer.steps(mask),
            x,
            kind="text",
            norm=self.ln_final,
            pool=lambda y: self.ln_final(y[:, -1]) @ self.text_projection,
        )

    def intermediates(self, inputs: torch.Tensor, request: IntermediatesRequest) -> Intermediates:
        """As open_clip: the appended class token is split off the intermediates (returned
        as ``text_intermediates_suffix`` with ``output_extra_tokens``)."""
        out = token_intermediates(self.token_pass(inputs), request)
        states = out["text_intermediates"]
        assert isinstance(states, list)
        out["text_intermediates"] = [y[:, :-1] for y in states]
        if request.output_extra_tokens:
            out["text_intermediates_suffix"] = [y[:, -1:] for y in states]
        return out


class CrossAttention(SelfAttention):
    """Multi-head attention of ``x`` over ``context`` (same width; fused ``in_proj_weight``
    rows: query, key, value), as ``nn.MultiheadAttention(q=x, k=v=context)``."""

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:  # pyright: ignore[reportIncompatibleMethodOverride]
        batch, length, width = x.shape
        head = width // self.heads
        w_q, w_kv = self.in_proj_weight.split([width, 2 * width])
        b_q, b_kv = self.in_proj_bias.split([width, 2 * width])
        q = F.linear(x, w_q, b_q).view(batch, length, self.heads, head).transpose(1, 2)
        kv = F.linear(context, w_kv, b_kv).view(batch, context.shape[1], 2, self.heads, head)
        kv = kv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class CrossAttentionBlock(ResidualAttentionBlock):
    """open_clip's ``ResidualAttentionBlock(is_cross_attention=True)``: keys and values are
    the context normed by ``ln_1_kv``."""

    def __init__(self, width: int, heads: int, mlp_width: int, activation: str, eps: float) -> None:
        super().__init__(width, heads, mlp_width, activation, eps, causal=False)
        self.attn = CrossAttention(width, heads)
        self.ln_1_kv = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:  # pyright: ignore[reportIncompatibleMethodOverride]
        x = x + self.attn(self.ln_1(x), self.ln_1_kv(context))
        return x + self.mlp(self.ln_2(x))


class MultimodalDecoder(Transformer):
    """open_clip's ``MultimodalTransformer``: causal self-attention blocks (``resblocks``)
    interleaved with cross-attention blocks over the image tokens (``cross_attn``), then
    ``ln_final`` and ``text_projection`` to vocabulary logits."""

    def __init__(self, cfg: MultimodalDecoderConfig, activation: str, eps: float) -> None:
        w = cfg.width
        super().__init__(w, cfg.layers, cfg.heads, cfg.mlp_width, activation, eps, causal=True)
        self.context_length = cfg.context_length
        self.cross_attn = nn.ModuleList(
            CrossAttentionBlock(w, cfg.heads, cfg.mlp_width, activation, eps)
            for _ in range(cfg.layers)
        )
        self.ln_final = nn.LayerNorm(w, eps=eps)
        self.text_projection = nn.Parameter(torch.empty(w, cfg.vocab_size))
        self.init_weights()

    def init_weights(self) -> None:
        super().init_weights()
        for block in cast(list[CrossAttentionBlock], list(self.cross_attn)):
            nn.init.normal_(block.attn.in_proj_weight, std=self.width**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=self.width**-0.5)
        init_scaled_normal_(self.text_projection, self.width)

    def forward(self, text_tokens: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:  # pyright: ignore[reportIncompatibleMethodOverride]
        """``(N, L, width)`` text tokens, ``(N, T, width)`` image tokens → ``(N, L, vocab)``."""
        if text_tokens.shape[1] > self.context_length:
            raise ValueError(
                f"the decoder reads at most {self.context_length} tokens, "
                f"got {text_tokens.shape[1]}"
            )
        x = text_tokens
        for block, cross in zip(self.resblocks, self.cross_attn, strict=True):
            x = self.run(block, x)
            x = self.run(cross, x, image_tokens)
        return self.ln_final(x) @ self.text_projection


class CoCa(CLIP):
    """A CLIP model with open_clip CoCa's towers and a captioning ``text_decoder`` (built
    with ``towers="both"`` only). ``encode_image`` / ``encode_text`` work as for CLIP;
    :meth:`caption_logits` is open_clip's ``CoCa.forward`` and :meth:`generate` its
    ``generate``."""

    text_decoder: MultimodalDecoder | None

    def __init__(self, config: ClipConfig, towers: Towers = "both", **options: Any) -> None:
        """As :class:`CLIP` (``options``: its ``preprocess_config``)."""
        super().__init__(config, towers, **options)
        decoder = config.decoder
        if not isinstance(decoder, MultimodalDecoderConfig):
            raise ConfigError(f"a CoCa model needs a 'multimodal' decoder, got {decoder!r}")
        activation = decoder.activation or config.activation
        eps = config.norm_eps if decoder.norm_eps is None else decoder.norm_eps
        self.text_decoder = None
        if towers == "both":
            self._check_widths(decoder.width)
            self.text_decoder = MultimodalDecoder(decoder, activation, eps)

    def _check_widths(self, width: int) -> None:
        for name in ("image", "text"):
            dim = getattr(self.tower(name), "token_dim", None)
            if dim != width:
                raise ConfigError(
                    f"the decoder's width {width} differs from the {name} tower's token "
                    f"width {dim}: they must be equal"
                )

    def get_tokenizer(self) -> Callable[..., torch.Tensor]:
        """CLIP's BPE for open_clip's CoCa text tower (unless :meth:`set_tokenizer` gave
        another); an HF text tower's own, as for CLIP."""
        if self._tokenizer is None and isinstance(self.config.text, CocaTextConfig):
            self._tokenizer = get_tokenizer()
        return super().get_tokenizer()

    def decoder(self) -> MultimodalDecoder:
        """The text decoder (an error for a model loaded with one tower)."""
        if self.text_decoder is None:
            raise RuntimeError(f"this model was loaded with towers={self.towers!r}: no decoder")
        return self.text_decoder

    def encode_image_tokens(self, pixels: torch.Tensor, normalize: bool = True) -> TokenOutput:
        """``(image embedding, image tokens)`` (open_clip's ``_encode_image``)."""
        features, tokens = _tokens_of(self.tower("image"), pixels)
        return (F.normalize(features, dim=-1) if normalize else features), tokens

    def encode_text_tokens(self, tokens: torch.Tensor, normalize: bool = True) -> TokenOutput:
        """``(text embedding, text tokens)`` (open_clip's ``_encode_text``)."""
        features, states = _tokens_of(self.tower("text"), tokens)
        return (F.normalize(features, dim=-1) if normalize else features), states

    def caption_logits(
        self,
        pixels: torch.Tensor | None,
        tokens: torch.Tensor,
        image_tokens: torch.Tensor | None = None,
        output_labels: bool = True,
    ) -> dict[str, torch.Tensor]:
        """open_clip's ``CoCa.forward``: normalised ``image_features`` / ``text_features``,
        next-token ``logits`` (teacher forcing: over ``tokens[:, :-1]`` with ``labels``
        ``tokens[:, 1:]`` when ``output_labels``), ``logit_scale``. ``image_tokens`` reuses
        an image pass (then the image features are not returned)."""
        out: dict[str, torch.Tensor] = {}
        if image_tokens is None:
            if pixels is None:
                raise ValueError("caption_logits needs pixels or image_tokens")
            out["image_features"], image_tokens = self.encode_image_tokens(pixels)
        out["text_features"], states = self.encode_text_tokens(tokens)
        if output_labels:
            out["labels"], states = tokens[:, 1:], states[:, :-1]
        out["logits"] = self.decoder()(states, image_tokens)
        out["logit_scale"] = self.logit_scale.exp()
        return out

    @property
    def pad_id(self) -> int:
        """The padding id of generated captions (open_clip's ``CoCa.pad_id``: 0)."""
        return int(getattr(self.tower("text"), "pad_id", 0))

    def next_token_logits(self, ids: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """``(N, vocab)`` decoder logits for the token after ``ids`` ``(N, L)``."""
        _, states = self.encode_text_tokens(ids, normalize=False)
        return self.decoder()(states, image_tokens)[:, -1]

    @torch.no_grad()
    def generate(self, images: torch.Tensor, **options: Any) -> torch.Tensor:
        """Caption token ids for ``(N, 3, H, W)`` images, with open_clip's ``generate``
        arguments (``generation_type`` ``"beam_search"`` (default), ``"top_p"``,
        ``"top_k"``; ``seq_len``, ``temperature``, ``num_beams``, ...: see
        :class:`~clipforge.models.coca_generate.GenerationOptions`)."""
        opts = GenerationOptions(**options)
        was_training = self.training
        self.eval()
        try:
            return generate_tokens(self, images, opts)
        finally:
            self.train(was_training)

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts: image and text towers, the decoder (``"decoder"``) and total."""
        counts = super().num_parameters()
        decoder = self.text_decoder
        counts["decoder"] = sum(p.numel() for p in decoder.parameters()) if decoder else 0
        return counts


def _tokens_of(tower: Tower, inputs: torch.Tensor) -> TokenOutput:
    """A CoCa tower's ``(pooled, tokens)``; every tower of a CoCa model has ``forward_tokens``."""
    forward_tokens = getattr(tower, "forward_tokens", None)
    if forward_tokens is None:
        raise ConfigError(f"the {type(tower).__name__} tower does not output tokens for CoCa")
    return forward_tokens(inputs)
