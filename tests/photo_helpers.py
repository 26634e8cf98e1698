"""Generated phone-library fixtures: EXIF JPEGs (dates, offsets, GPS, cameras, orientation),
HEIC/AVIF files and a minimal DNG with an embedded JPEG preview. Nothing is downloaded."""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.ExifTags import GPS, IFD, Base

# The upright view of stored pixels ``a`` (H, W, C) for EXIF orientations 1-8, written
# from the EXIF specification's wording, independently of Pillow's exif_transpose.
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1, :],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # row 0 is the left side, column 0 the top
    6: lambda a: np.rot90(a, k=-1),  # row 0 is the right side: turn 90 degrees clockwise
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],  # row 0 right side, column 0 bottom
    8: lambda a: np.rot90(a, k=1),  # row 0 is the left side, column 0 the bottom
}


@dataclass(frozen=True)
class Shot:
    """What a fixture photo's EXIF says (``None``: tag left out)."""

    taken: str | None = None  # "YYYY:MM:DD HH:MM:SS"
    offset: str | None = None  # "+02:00"
    lat: float | None = None
    lon: float | None = None
    make: str | None = None
    model: str | None = None
    orientation: int | None = None


def pixels(seed: int, size: tuple[int, int] = (48, 40), *, smooth: bool = False) -> np.ndarray:
    """Random RGB pixels (H, W, 3), distinct per seed; ``smooth``: a blurry 6x5 colour grid
    (what lossy codecs such as HEIC keep close)."""
    rng = np.random.default_rng(seed)
    if smooth:
        grid = Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8))
        return np.asarray(grid.resize(size, Image.Resampling.BILINEAR))
    return rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    d = int(value)
    m = int((value - d) * 60)
    return float(d), float(m), round((value - d - m / 60) * 3600, 4)


def exif_for(shot: Shot) -> Image.Exif:
    """A Pillow ``Exif`` holding the shot's tags."""
    exif = Image.Exif()
    if shot.make:
        exif[Base.Make] = shot.make
    if shot.model:
        exif[Base.Model] = shot.model
    if shot.orientation:
        exif[Base.Orientation] = shot.orientation
    sub = exif.get_ifd(IFD.Exif)
    if shot.taken:
        sub[Base.DateTimeOriginal] = shot.taken
    if shot.offset:
        sub[Base.OffsetTimeOriginal] = shot.offset
    if shot.lat is not None and shot.lon is not None:
        gps = exif.get_ifd(IFD.GPSInfo)
        gps[GPS.GPSLatitudeRef] = "N" if shot.lat >= 0 else "S"
        gps[GPS.GPSLatitude] = _dms(shot.lat)
        gps[GPS.GPSLongitudeRef] = "E" if shot.lon >= 0 else "W"
        gps[GPS.GPSLongitude] = _dms(shot.lon)
    return exif


def write_photo(
    path: Path, shot: Shot, seed: int = 0, *, mtime: float | None = None, smooth: bool = False,
    **save,
) -> Path:
    """An image file (format by suffix) with the shot's EXIF; ``mtime`` sets the file time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels(seed, smooth=smooth)).save(path, exif=exif_for(shot), **save)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def write_heic(path: Path, seed: int = 0, shot: Shot | None = None) -> Path:
    """A HEIC file written with pillow-heif."""
    from pillow_heif import register_heif_opener

    register_heif_opener()
    return write_photo(path, shot or Shot(), seed, smooth=True, format="HEIF", quality=90)


def jpeg_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="JPEG", quality=95)
    return out.getvalue()


def write_dng(path: Path, preview: bytes, *, with_preview: bool = True) -> Path:
    """A minimal DNG: IFD0 a JPEG preview (NewSubFileType 1), its SubIFD 64x64 16-bit CFA
    raw data; LibRaw (rawpy) opens it and ``extract_thumb`` returns ``preview``."""
    side = 64
    raw = (np.arange(side * side, dtype=np.uint16) % 4096).tobytes()
    n0, n1 = 13, 13
    ifd1 = 8 + 2 + 12 * n0 + 4
    bps = ifd1 + 2 + 12 * n1 + 4
    prev = bps + 6
    raw_at = prev + len(preview)

    def v(kind: int, value) -> bytes:
        if kind == 3:
            return struct.pack("<HH", value, 0)
        if kind == 4:
            return struct.pack("<I", value)
        return bytes(value) + b"\0" * (4 - len(value))

    compression = 7 if with_preview else 1
    ifd0_entries = [
        (254, 4, 1, v(4, 1)), (256, 4, 1, v(4, 64)), (257, 4, 1, v(4, 48)),
        (258, 3, 3, struct.pack("<I", bps)), (259, 3, 1, v(3, compression)),
        (262, 3, 1, v(3, 6)), (271, 2, 4, b"Cnn\0"), (273, 4, 1, v(4, prev)),
        (277, 3, 1, v(3, 3)), (278, 4, 1, v(4, 48)), (279, 4, 1, v(4, len(preview))),
        (330, 4, 1, v(4, ifd1)), (50706, 1, 4, v(1, [1, 4, 0, 0])),
    ]  # fmt: skip
    ifd1_entries = [
        (254, 4, 1, v(4, 0)), (256, 4, 1, v(4, side)), (257, 4, 1, v(4, side)),
        (258, 3, 1, v(3, 16)), (259, 3, 1, v(3, 1)), (262, 3, 1, v(3, 32803)),
        (273, 4, 1, v(4, raw_at)), (277, 3, 1, v(3, 1)), (278, 4, 1, v(4, side)),
        (279, 4, 1, v(4, len(raw))), (33421, 3, 2, struct.pack("<HH", 2, 2)),
        (33422, 1, 4, v(1, [0, 1, 1, 2])), (50717, 4, 1, v(4, 4095)),
    ]  # fmt: skip

    def ifd(entries: list) -> bytes:
        out = struct.pack("<H", len(entries))
        for tag, kind, count, value in sorted(entries):
            out += struct.pack("<HHI", tag, kind, count) + value
        return out + struct.pack("<I", 0)

    data = b"II*\x00" + struct.pack("<I", 8) + ifd(ifd0_entries) + ifd(ifd1_entries)
    data += struct.pack("<HHH", 8, 8, 8) + preview + raw
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
