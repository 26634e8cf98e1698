"""Key renaming by templates, shared by the key-mapping modules of the tower families.

A template is a parameter name in which ``{i}`` stands for a block index; one ending in "."
renames a whole module prefix. :class:`Renames` compiles ``(source, target)`` pairs once and
renames keys with the first matching rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def compile_template(template: str) -> re.Pattern[str]:
    """The regular expression of a name template (``{i}`` captures the block index)."""
    body = re.escape(template).replace(re.escape("{i}"), r"(\d+)")
    return re.compile(f"^{body}{'' if template.endswith('.') else '$'}")


class Renames:
    """Compiled ``(source template, target template)`` rules; ``what`` and ``where`` name them
    in errors (``no EVA mapping for image-tower key 'x'``)."""

    def __init__(self, pairs: Iterable[tuple[str, str]], what: str, where: str = "key") -> None:
        self.rules = tuple((compile_template(a), b.replace("{i}", r"\1")) for a, b in pairs)
        self.what, self.where = what, where

    def __call__(self, name: str) -> str:
        """``name`` renamed by the first matching rule (``KeyError`` if none matches)."""
        for pattern, replacement in self.rules:
            new, count = pattern.subn(replacement, name, count=1)
            if count:
                return new
        raise KeyError(f"no {self.what} mapping for {self.where} {name!r}")
