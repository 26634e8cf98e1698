"""Prompt templates for zero-shot classification and template-captioned datasets.

A template is a string with the class placeholder ``{c}``. :func:`get_templates` resolves a
named set, a file, one template or a list. The bundled sets (``zeroshot_templates.json``:
OpenAI's 80 ImageNet prompts and the CIFAR-10/100 sets) come from CLIP_benchmark
(https://github.com/LAION-AI/CLIP_benchmark), MIT License.

This module imports no model code, so data sources (``data/folder.py``) and the zero-shot
classifier (``zeroshot.py``) share it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from types import MappingProxyType

from .errors import UsageError

__all__ = ["PLACEHOLDER", "TEMPLATE_SETS", "get_templates"]

PLACEHOLDER = "{c}"


def _load_template_sets() -> Mapping[str, tuple[str, ...]]:
    text = resources.files("clipforge").joinpath("zeroshot_templates.json").read_text("utf-8")
    raw = json.loads(text)
    return MappingProxyType({k: tuple(v) for k, v in raw.items() if not k.startswith("_")})


TEMPLATE_SETS: Mapping[str, tuple[str, ...]] = _load_template_sets()
"""Named template sets: ``"openai_imagenet"`` (80), ``"simple"`` (1), ``"cifar10"``, ``"cifar100"``."""


def _validate(templates: Sequence[str], source: str) -> list[str]:
    out = list(templates)
    if not out:
        raise UsageError(f"no templates in {source}")
    for t in out:
        if not isinstance(t, str) or PLACEHOLDER not in t:
            raise UsageError(
                f"template {t!r} in {source} lacks the class placeholder {PLACEHOLDER}"
            )
    return out


def _read_template_file(path: Path) -> list[str]:
    text = path.read_text("utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if not isinstance(data, list):
            raise UsageError(f"{path}: expected a JSON list of template strings")
        return _validate(data, str(path))
    lines = [line.strip() for line in text.splitlines()]
    return _validate([line for line in lines if line and not line.startswith("#")], str(path))


def get_templates(templates: str | os.PathLike | Sequence[str]) -> list[str]:
    """Resolve templates: a name in :data:`TEMPLATE_SETS`, a file, one template or a list.

    Files are a JSON list of strings (``.json``) or text with one template per line (blank
    lines and ``#`` comments ignored). Every template must contain ``{c}``, which is
    replaced by the class name.
    """
    if isinstance(templates, os.PathLike):
        return _read_template_file(Path(templates))
    if isinstance(templates, str):
        if templates in TEMPLATE_SETS:
            return list(TEMPLATE_SETS[templates])
        if PLACEHOLDER in templates:
            return [templates]
        if Path(templates).is_file():
            return _read_template_file(Path(templates))
        raise UsageError(
            f"unknown template set {templates!r}: not one of {sorted(TEMPLATE_SETS)}, "
            f"not a file, and no {PLACEHOLDER} placeholder"
        )
    return _validate(templates, "the template list")
