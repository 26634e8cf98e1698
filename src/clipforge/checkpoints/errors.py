"""Errors raised while reading, converting or applying checkpoints."""

from __future__ import annotations

from ..errors import ConfigError, InputError


class CheckpointError(InputError, ValueError):
    """A checkpoint cannot be read or understood."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle checkpoint asks to run code; refused unless explicitly trusted."""


class CheckpointMismatchError(CheckpointError):
    """Checkpoint weights do not fit the model: lists every missing, unexpected, mis-shaped key."""

    def __init__(
        self,
        source: str,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    ) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        lines = [f"checkpoint {source} does not match the model architecture:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_preview(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_preview(unexpected)}")
        if mismatched:
            shapes = [f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in mismatched]
            lines.append(f"  mismatched shapes ({len(mismatched)}): {_preview(shapes)}")
        lines.append(
            "  (is it the checkpoint of another architecture? try clipforge.load(path) "
            "without a name to infer the architecture from the weights)"
        )
        super().__init__("\n".join(lines))


def _preview(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


class UnknownFormatError(CheckpointError, ConfigError):
    """A checkpoint format name that is not registered (the message suggests the closest)."""

    exit_code = ConfigError.exit_code
