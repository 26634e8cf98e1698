"""HTTP byte ranges for the original files (a browser seeks in a video with them).

One ``Range: bytes=START-END`` (or ``START-``, or ``-SUFFIX``) is answered with 206 and
just those bytes, read from the already-checked descriptor; anything else that is not
well-formed, or several ranges, gets the whole file (RFC 9110 lets a server ignore a
Range); a range starting past the end is answered 416.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from fastapi import HTTPException

from ..index.video import VIDEO_TYPES

CHUNK = 1 << 16
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def media_type(path: str) -> str:
    """The content type of an indexed file, by suffix (videos from a fixed table)."""
    suffix = Path(path).suffix.lower()
    return VIDEO_TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (inclusive) asked for by a ``Range`` header, ``None`` for the whole
    file; ``HTTPException(416)`` when it starts past the end."""
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None or match[1] == match[2] == "":
        return None
    if match[1] == "":  # the last N bytes
        length = int(match[2])
        if length == 0:
            raise _unsatisfiable(size)
        return max(0, size - length), size - 1
    start = int(match[1])
    end = size - 1 if match[2] == "" else min(int(match[2]), size - 1)
    if start >= size:
        raise _unsatisfiable(size)
    if end < start:
        return None
    return start, end


def _unsatisfiable(size: int) -> HTTPException:
    return HTTPException(416, "range not satisfiable", headers={"Content-Range": f"bytes */{size}"})


def read_span(file: BinaryIO, start: int, length: int) -> Iterator[bytes]:
    """``length`` bytes from ``start``, then close the file."""
    with file:
        file.seek(start)
        while length > 0 and (chunk := file.read(min(CHUNK, length))):
            length -= len(chunk)
            yield chunk
