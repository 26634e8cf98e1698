"""Scale-out paths on engines people already run: Ray Data for embedding image collections.

``clipforge.distributed.embed(source, output)`` (CLI: ``clipforge embed SOURCE --engine ray
-o out/``) needs the ``ray`` extra: ``pip install 'clipforge[ray]'``.
"""

from __future__ import annotations

from .ray_embed import MANIFEST, EmbedReport, embed
from .sources import list_source

__all__ = ["MANIFEST", "EmbedReport", "embed", "list_source"]
