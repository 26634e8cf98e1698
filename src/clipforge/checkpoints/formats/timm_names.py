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

Names = tuple[tuple[str, str], ...]

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
BLOCKS: Final[Names] = (
    ("blocks.{i}.norm1.", BLOCK + "ln_1."),
    ("blocks.{i}.norm2.", BLOCK + "ln_2."),
    ("blocks.{i}.attn.qkv.weight", BLOCK + "attn.in_proj_weight"),
    ("blocks.{i}.attn.qkv.bias", BLOCK + "attn.in_proj_bias"),
    ("blocks.{i}.attn.proj.", BLOCK + "attn.out_proj."),
    ("blocks.{i}.attn.norm.", BLOCK + "attn.ln."),
    ("blocks.{i}.attn.rel_pos.mlp.", BLOCK + "attn.rel_pos.mlp."),
    ("blocks.{i}.ls1.", BLOCK + "ls_1."),
    ("blocks.{i}.ls2.", BLOCK + "ls_2."),
    ("blocks.{i}.mlp.fc1.", BLOCK + "mlp.c_fc."),
    ("blocks.{i}.mlp.norm.", BLOCK + "mlp.ln."),
    ("blocks.{i}.mlp.fc2.", BLOCK + "mlp.c_proj."),
)

#: the final norm
POST_NORM: Final[Names] = (("norm.", "ln_post."),)

#: timm's attention-pool (MAP) head
MAP_POOL: Final[Names] = (
    ("attn_pool.latent", "attn_pool.latent"),
    ("attn_pool.q.", "attn_pool.q_proj."),
    ("attn_pool.kv.", "attn_pool.kv_proj."),
    ("attn_pool.proj.", "attn_pool.out_proj."),
    ("attn_pool.norm.", "attn_pool.ln."),
    ("attn_pool.mlp.fc1.", "attn_pool.mlp.c_fc."),
    ("attn_pool.mlp.fc2.", "attn_pool.mlp.c_proj."),
)

#: the whole trunk without a head: stem, blocks, final norm
TRUNK: Final[Names] = STEM + BLOCKS + POST_NORM

#: native rank of the tensors timm stores with leading unit dims (to rank 3)
UNBATCHED: Final[dict[str, int]] = {
    "class_embedding": 1,
    "positional_embedding": 2,
    "attn_pool.latent": 2,
}


def under(prefix: str, names: Names) -> Names:
    """``names`` with ``prefix`` before each timm template (``"trunk."`` for open_clip's
    ``visual.trunk.`` when the table works under ``visual.``)."""
    return tuple((prefix + timm, native) for timm, native in names)
