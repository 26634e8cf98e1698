"""timm's Vision Transformer names ↔ clipforge's, as data shared by every layout whose image
tower is a timm ViT trunk (open_clip's EVA, Perception Encoder, SigLIP, timm ViT and
MobileCLIP-ViT towers).

Each table is ``(timm template, clipforge template)`` pairs relative to the trunk (timm's
``blocks.{i}.…`` ↔ clipforge's ``transformer.resblocks.{i}.…``; a name ending in "." renames
a module prefix). A layout concatenates the parts its trunk has and hands them to
:class:`~.renames.KeyTable`; names a trunk does not have are never looked up, so a table
may hold modules of several timm variants (layer scale, EVA's sub-LNs, relative positions).
"""

from __future__ import annotations

from typing import Final

from .renames import Names, prefixed

#: clipforge's name of a residual block (``{i}``: its index)
BLOCK: Final = "transformer.resblocks.{i}."

#: patch embedding and the class/position embeddings
STEM: Final[Names] = (
    ("patch_embed.proj.", "patch_embed."),
    ("cls_token", "class_embedding"),
    ("pos_embed", "positional_embedding"),
    ("norm_pre.", "ln_pre."),
)

#: one timm ``Block`` (and ``Eva`` / relative-position / layer-scale variants of it)
BLOCKS: Final[Names] = prefixed("blocks.{i}.", BLOCK, (
    ("norm1.", "ln_1."),
    ("norm2.", "ln_2."),
    ("attn.qkv.weight", "attn.in_proj_weight"),
    ("attn.qkv.bias", "attn.in_proj_bias"),
    ("attn.proj.", "attn.out_proj."),
    ("attn.norm.", "attn.ln."),
    ("attn.rel_pos.mlp.", "attn.rel_pos.mlp."),
    ("ls1.", "ls_1."),
    ("ls2.", "ls_2."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.norm.", "mlp.ln."),
    ("mlp.fc2.", "mlp.c_proj."),
))  # fmt: skip

#: the final norm
POST_NORM: Final[Names] = (("norm.", "ln_post."),)

#: timm's attention-pool (MAP) head
MAP_POOL: Final[Names] = prefixed("attn_pool.", "attn_pool.", (
    ("latent", "latent"),
    ("q.", "q_proj."),
    ("kv.", "kv_proj."),
    ("proj.", "out_proj."),
    ("norm.", "ln."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
))  # fmt: skip

#: the whole trunk without a head: stem, blocks, final norm
TRUNK: Final[Names] = STEM + BLOCKS + POST_NORM

#: native rank of the tensors timm stores with leading unit dims (to rank 3)
UNBATCHED: Final[dict[str, int]] = {
    "class_embedding": 1,
    "positional_embedding": 2,
    "attn_pool.latent": 2,
}
