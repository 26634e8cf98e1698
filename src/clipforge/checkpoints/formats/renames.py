"""Key renaming by templates, shared by the key-mapping modules of the tower families.

A template is a parameter name in which ``{i}`` stands for a block index; one ending in "."
renames a whole module prefix. :class:`Renames` compiles ``(source, target)`` pairs once and
renames keys with the first matching rule; :class:`KeyTable` applies a whole layout table
(renames, merges, reshapes) to a state dict, both ways.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch


def compile_template(template: str) -> re.Pattern[str]:
    """The regular expression of a name template (``{i}`` captures the block index)."""
    body = re.escape(template).replace(re.escape("{i}"), r"(\d+)")
    return re.compile(f"^{body}{'' if template.endswith('.') else '$'}")


Names = tuple[tuple[str, str], ...]
Merge = tuple[tuple[str, ...], str]


def prefixed(source: str, native: str, names: Iterable[tuple[str, str]]) -> Names:
    """``names`` with ``source`` before each source template and ``native`` before each
    native one (a block's module names written once under its prefix)."""
    return tuple((source + a, native + b) for a, b in names)


def fused(
    part: str, parts: Iterable[str], target: str, kinds: Iterable[str] = ("weight", "bias")
) -> tuple[Merge, ...]:
    """One merge per tensor kind: the source tensors ``part`` with ``{p}`` replaced by each of
    ``parts`` (q, k, v) form ``target``; ``{kind}`` in both is ``weight``, ``bias``..."""
    parts = tuple(parts)
    return tuple(
        (tuple(part.replace("{p}", p).replace("{kind}", k) for p in parts),
         target.replace("{kind}", k))
        for k in kinds
    )  # fmt: skip


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


def _merge_part(
    merges: tuple[tuple[tuple[re.Pattern[str], ...], str], ...], name: str
) -> tuple[str, int, int] | None:
    """``(native name, part index, part count)`` when ``name`` is one part of a merge."""
    for parts, target in merges:
        for index, part in enumerate(parts):
            found = part.match(name)
            if found:
                return target.replace("{i}", found[1] if found.groups() else ""), index, len(parts)
    return None


class KeyTable:
    """One tower's key layout as a table, applied both ways: the tensors under ``source``
    (another library's prefix, e.g. ``"visual.trunk."``) ↔ under ``native`` (clipforge's,
    e.g. ``"visual."``). Keys under neither prefix pass through unchanged.

    - ``names``: ``(source template, native template)`` renames (see :class:`Renames`); the
      reverse direction uses the first rule whose native side matches;
    - ``merges``: ``((source part templates...), native template)``: parts concatenated on
      dim 0 into one native tensor (q/k/v into ``in_proj``, SwiGLU's gate and value), and
      split back into equal chunks;
    - ``unbatched``: native name → its rank, for tensors the source stores with leading unit
      dims to rank 3 (timm's ``cls_token`` ``(1, 1, C)`` ↔ ``(C,)``: rank 1);
    - ``outside``: native names (prefixes) under ``native`` that are not the source's (a
      projection head open_clip keeps next to an HF text model) and stay where they are;
    - ``strict``: whether a name no rule matches is an error (``KeyError``); ``False`` keeps
      its name and only moves it between the prefixes.

    ``what`` names the layout in errors (``no EVA mapping for image-tower key 'x'``).
    """

    def __init__(
        self,
        source: str,
        native: str,
        names: Iterable[tuple[str, str]],
        what: str,
        *,
        merges: Iterable[Merge] = (),
        unbatched: dict[str, int] | None = None,
        outside: tuple[str, ...] = (),
        strict: bool = True,
        where: str = "key",
    ) -> None:
        names, merges = tuple(names), tuple(merges)
        self.source, self.native, self.outside, self.strict = source, native, outside, strict
        self.unbatched = dict(unbatched or {})
        self._to = Renames(names, what, where)
        self._from = Renames(((b, a) for a, b in names), what, where)
        self._merges = tuple((tuple(map(compile_template, p)), t) for p, t in merges)
        self._splits = tuple((compile_template(t), p) for p, t in merges)
        self.what = what

    def _rename(self, rename: Renames, name: str) -> str:
        try:
            return rename(name)
        except KeyError:
            if self.strict:
                raise
            return name

    def to_native(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` with the source's tensors renamed, merged and reshaped to clipforge's."""
        out: dict[str, torch.Tensor] = {}
        pending: dict[str, list[torch.Tensor | None]] = {}
        for key, value in state.items():
            if not key.startswith(self.source):
                out[key] = value
                continue
            name = key.removeprefix(self.source)
            merge = _merge_part(self._merges, name)
            if merge is not None:
                target, index, count = merge
                pending.setdefault(target, [None] * count)[index] = value
                continue
            name = self._rename(self._to, name)
            if name in self.unbatched:  # (1, 1, C) -> (C,), (1, L, C) -> (L, C)
                value = value.reshape(value.shape[-self.unbatched[name] :])
            out[self.native + name] = value
        for target, parts in pending.items():
            if any(p is None for p in parts):
                raise KeyError(
                    f"{self.what} state dict has only some of the tensors that form {target!r}"
                )
            out[self.native + target] = torch.cat(parts, dim=0)  # type: ignore[arg-type]
        return out

    def from_native(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The inverse of :meth:`to_native`: merged tensors split into equal chunks."""
        out: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            name = key.removeprefix(self.native)
            if not key.startswith(self.native) or (self.outside and name.startswith(self.outside)):
                out[key] = value
                continue
            split = next(
                ((m, p) for pattern, p in self._splits if (m := pattern.match(name))), None
            )
            if split is not None:
                found, parts = split
                block = found[1] if found.groups() else ""
                for part, chunk in zip(parts, value.chunk(len(parts), dim=0), strict=True):
                    out[self.source + part.replace("{i}", block)] = chunk
                continue
            if name in self.unbatched:
                value = value.reshape((1,) * (3 - value.ndim) + tuple(value.shape))
            out[self.source + self._rename(self._from, name)] = value
        return out
