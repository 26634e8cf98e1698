"""Dense text–image similarity methods over a ViT's last block.

Each method takes the tokens entering the last block ``x`` ``(N, L, width)`` and unit text
embeddings ``(T, D)`` and returns cosine similarities ``(N, T, grid, grid)``.

- ``plain``: the last block's patch outputs → final norm → projection (the naive baseline
  of MaskCLIP, Zhou et al., ECCV 2022, §3).
- ``maskclip``: MaskCLIP (Zhou, Loy, Dai, "Extract Free Dense Labels from CLIP", ECCV 2022):
  in the last block, the value embedding ``v = W_v ln_1(x)`` → ``out_proj``, skipping the
  query–key attention → final norm → projection (the last block's residual and FFN are not
  applied on this path).
- ``clearclip``: ClearCLIP (Lan et al., "ClearCLIP: Decomposing CLIP Representations for
  Dense Vision-Language Inference", ECCV 2024): q–q self-self attention in the last block,
  residual connection and FFN dropped.
- ``gradcam``: Grad-CAM (Selvaraju et al., ICCV 2017) on the tokens entering the last block
  (pytorch-grad-cam's target for ViTs, ``blocks[-1].norm1``): channel weights = the mean
  gradient of the image–text cosine over the patches; map = ReLU(Σ_c weight_c · token_c).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .towers import ViTParts

Method = Callable[[ViTParts, torch.Tensor, torch.Tensor], torch.Tensor]


def _to_grid(parts: ViTParts, sim: torch.Tensor) -> torch.Tensor:
    """``(N, grid², T)`` → ``(N, T, grid, grid)``."""
    n, _, t = sim.shape
    return sim.transpose(1, 2).reshape(n, t, parts.grid, parts.grid)


def _cosine(parts: ViTParts, patch_emb: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    return _to_grid(parts, F.normalize(patch_emb, dim=-1) @ texts.T)


def plain(parts: ViTParts, x: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """Cosine of each projected patch token of the last block's output with each text."""
    out = parts.last_block(x)[:, parts.prefix :]
    return _cosine(parts, parts.head(out), texts)


def _qkv(parts: ViTParts, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The last block's q, k, v ``(N, heads, L, head_dim)`` from ``ln_1(x)``."""
    block = parts.last_block
    attn = block.attn
    n, length, width = x.shape
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
    qkv = qkv.view(n, length, 3, attn.heads, width // attn.heads).permute(2, 0, 3, 1, 4)
    return qkv[0], qkv[1], qkv[2]


def maskclip(parts: ViTParts, x: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """MaskCLIP: ``out_proj(v)`` of the last block, then final norm and projection."""
    attn = parts.last_block.attn
    width = x.shape[-1]
    w_v, b_v = attn.in_proj_weight[2 * width :], attn.in_proj_bias[2 * width :]
    v = F.linear(parts.last_block.ln_1(x[:, parts.prefix :]), w_v, b_v)
    return _cosine(parts, parts.head(attn.out_proj(v)), texts)


def clearclip(parts: ViTParts, x: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """ClearCLIP: softmax(q qᵀ/√d) v → out_proj in the last block, no residual, no FFN."""
    q, _, v = _qkv(parts, x)
    out = F.scaled_dot_product_attention(q, q, v)
    n, heads, length, head_dim = out.shape
    out = parts.last_block.attn.out_proj(out.transpose(1, 2).reshape(n, length, heads * head_dim))
    return _cosine(parts, parts.head(out[:, parts.prefix :]), texts)


def gradcam(parts: ViTParts, x: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of each text's cosine with the pooled image embedding, on the tokens
    entering the last block (one backward pass per text)."""
    maps = []
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        image = F.normalize(parts.pool(parts.last_block(x)), dim=-1)
        for j in range(texts.shape[0]):
            (grad,) = torch.autograd.grad((image @ texts[j]).sum(), x, retain_graph=True)
            patches, grads = x[:, parts.prefix :], grad[:, parts.prefix :]
            weights = grads.mean(dim=1, keepdim=True)
            maps.append(F.relu((weights * patches).sum(-1)).detach())
    return _to_grid(parts, torch.stack(maps, dim=-1))


METHODS: dict[str, Method] = {
    "plain": plain,
    "maskclip": maskclip,
    "clearclip": clearclip,
    "gradcam": gradcam,
}
