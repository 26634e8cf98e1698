"""Features inside the towers: transformers-style hidden states and the recipes that read them
(Stable Diffusion text conditioning, LLaVA-style image features).

Every helper runs one pass through :meth:`Tower.forward_intermediates`, skipping the blocks
after the last one it needs (``stop_early``), for a model loaded from any format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, cast

import torch

from .errors import UsageError
from .models import CLIP, Tower, TransformerTower

SdVersion = Literal["1", "2", "xl"]
Texts = str | Sequence[str] | torch.Tensor


def _tower(
    model: CLIP, image: torch.Tensor | None, text: torch.Tensor | None
) -> tuple[Tower, torch.Tensor]:
    if image is not None and text is None:
        return model.tower("image"), image
    if text is not None and image is None:
        return model.tower("text"), text
    raise UsageError("pass exactly one of image= or text=")


def _tokens_only(tower: Tower, inputs: torch.Tensor, indices, stop_early: bool) -> list:
    """Block outputs with every token (prefix first), ``(N, L, width)`` each."""
    if not isinstance(tower, TransformerTower):
        raise UsageError(
            f"{type(tower).__name__} has no token hidden states (a convolutional tower): "
            "use model.forward_intermediates for its feature maps"
        )
    out = tower.forward_intermediates(
        inputs, indices=indices, stop_early=stop_early, intermediates_only=True,
        output_fmt="NLC", output_extra_tokens=True,
    )  # fmt: skip
    # with intermediates_only, every entry is a list of per-block tensors
    states = cast(list[torch.Tensor], out.get("image_intermediates", out.get("text_intermediates")))
    prefix = cast(list[torch.Tensor] | None, out.get("image_intermediates_prefix"))
    if prefix is None:
        return list(states)
    return [torch.cat([p, s], dim=1) for p, s in zip(prefix, states, strict=True)]


def hidden_states(
    model: CLIP, image: torch.Tensor | None = None, text: torch.Tensor | None = None
) -> tuple[torch.Tensor, ...]:
    """Every layer of one tower, indexed as transformers' ``output_hidden_states=True``.

    Reproduces ``CLIPVisionModel/CLIPTextModel/SiglipVisionModel/SiglipTextModel(...,
    output_hidden_states=True).hidden_states``: ``layers + 1`` tensors ``(N, L, width)``;
    index 0 is the input of the first block (vision: patch + class embeddings after the
    pre-norm ``ln_pre``; text: token + position embeddings), index ``i`` the output of block
    ``i`` (``-1`` the last block, ``-2`` the penultimate), none with the final norm.
    """
    tower, inputs = _tower(model, image, text)
    captured: list[torch.Tensor] = []
    hook = tower.blocks[0].register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        states = _tokens_only(tower, inputs, None, False)
    finally:
        hook.remove()
    return (captured[0], *states)


def hidden_state(
    model: CLIP, layer: int, image: torch.Tensor | None = None, text: torch.Tensor | None = None
) -> torch.Tensor:
    """``hidden_states(model, ...)[layer]`` without running the blocks after ``layer``."""
    tower, inputs = _tower(model, image, text)
    depth = len(tower.blocks)
    if not -(depth + 1) <= layer <= depth:
        raise UsageError(f"layer {layer} is out of range for {depth + 1} hidden states")
    index = layer % (depth + 1)
    if index == 0:
        return hidden_states(model, image=image, text=text)[0]
    return _tokens_only(tower, inputs, [index - 1], True)[0]


def llava_image_features(
    model: CLIP,
    images: torch.Tensor,
    select_layer: int = -2,
    select_feature: Literal["patch", "cls_patch"] = "patch",
) -> torch.Tensor:
    """LLaVA's vision features: ``hidden_states[select_layer]`` of the image tower, without the
    class token for ``"patch"``.

    Reproduces LLaVA's ``CLIPVisionTower.feature_select``:
    ``CLIPVisionModel(images, output_hidden_states=True).hidden_states[-2][:, 1:]``
    (``"cls_patch"`` keeps the class token). Towers without a class token (SigLIP) return
    every token for both. The blocks after ``select_layer`` are not run.
    """
    if select_feature not in ("patch", "cls_patch"):
        raise UsageError(f"select_feature must be 'patch' or 'cls_patch', got {select_feature!r}")
    states = hidden_state(model, select_layer, image=images)
    prefix = 1 if getattr(model.tower("image"), "class_embedding", None) is not None else 0
    return states[:, prefix:] if select_feature == "patch" else states


class TextConditioning(NamedTuple):
    """What a Stable Diffusion UNet reads from the text encoder(s): ``prompt_embeds``
    ``(N, 77, C)`` and, for SDXL, ``pooled_prompt_embeds`` ``(N, D)`` (else ``None``)."""

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor | None = None


def sd_tokens(model: CLIP, texts: Texts, pad: Literal["eot", "zero"]) -> torch.Tensor:
    """Token ids as diffusers' tokenizers give them: padded to the context with the EOT id
    (``openai/clip-vit-large-patch14``'s tokenizer: SD 1.x, SDXL's first encoder) or with id
    0, ``"!"`` (OpenCLIP's: SD 2.x, SDXL's bigG). Tensors are passed through as they are."""
    if isinstance(texts, torch.Tensor):
        return texts
    tokens = model.tokenize([texts] if isinstance(texts, str) else list(texts))
    if pad == "eot":
        text = model.tower("text")
        eot = getattr(text, "eot_token_id", None) or model.config.text.vocab_size - 1
        ends = (tokens == eot).int().argmax(dim=1, keepdim=True)
        after = torch.arange(tokens.shape[1]).unsqueeze(0) > ends
        tokens = tokens.masked_fill(after, eot)
    return tokens


def sd_text_conditioning(
    model: CLIP | tuple[CLIP, CLIP], texts: Texts, version: SdVersion = "1"
) -> TextConditioning:
    """Stable Diffusion's text conditioning from clipforge text towers.

    - ``"1"`` (SD 1.x, CLIP ViT-L/14): the last hidden state after the final norm —
      transformers' ``CLIPTextModel(ids).last_hidden_state``;
    - ``"2"`` (SD 2.x, OpenCLIP ViT-H/14): the penultimate hidden state after the final norm —
      ``last_hidden_state`` of the 23-layer ``CLIPTextModel`` diffusers ships (the final
      block is not run);
    - ``"xl"`` (SDXL; ``model`` is ``(clip_l, clip_bigg)``): ``hidden_states[-2]`` of both
      encoders (no final norm) concatenated on channels, and bigG's pooled projected
      embedding ``CLIPTextModelWithProjection(ids).text_embeds``, as diffusers'
      ``StableDiffusionXLPipeline.encode_prompt`` reads them.

    ``texts`` are strings (tokenized and padded as diffusers' tokenizers pad, see
    :func:`sd_tokens`) or token ids.
    """
    if version == "xl":
        if not isinstance(model, tuple) or len(model) != 2:
            raise UsageError("SDXL conditioning needs model=(clip_l, clip_bigg)")
        clip_l, bigg = model
        first = hidden_state(clip_l, -2, text=sd_tokens(clip_l, texts, "eot"))
        out = bigg.forward_intermediates(
            text=sd_tokens(bigg, texts, "zero"), text_indices=[-2], normalize=False
        )
        embeds = torch.cat([first, out["text_intermediates"][0]], dim=-1)
        # "text_features" is one tensor (only the intermediates are lists)
        return TextConditioning(embeds, cast(torch.Tensor, out["text_features"]))
    if isinstance(model, tuple) or version not in ("1", "2"):
        raise UsageError(
            f"version must be '1', '2' or 'xl' (one model for 1 and 2), got {version!r}"
        )
    tokens = sd_tokens(model, texts, "eot" if version == "1" else "zero")
    text = model.tower("text")
    out = text.forward_intermediates(
        tokens, indices=[-1 if version == "1" else -2], stop_early=True,
        normalize_intermediates=True, intermediates_only=True,
    )  # fmt: skip
    return TextConditioning(out["text_intermediates"][0])
