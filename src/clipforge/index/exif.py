"""Photo metadata from EXIF: capture date (with its UTC offset), GPS position, camera.

The capture date is ``DateTimeOriginal`` (with ``SubSecTimeOriginal``) in the offset of
``OffsetTimeOriginal``; without an offset it is the camera's wall clock (kept as such);
without either it is the file's modification time. :attr:`PhotoMeta.taken_source` records
which: ``"exif"``, ``"exif-local"`` (no offset) or ``"file"``.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from PIL import ExifTags, Image

from .photos import RAW_SUFFIXES, missing_plugin

_IFD = ExifTags.IFD
_BASE = ExifTags.Base
_GPS = ExifTags.GPS
_OFFSET = re.compile(r"^\s*([+-])(\d{2}):?(\d{2})\s*$")


@dataclass(frozen=True)
class PhotoMeta:
    """What the index stores about a photo besides its pixels.

    Attributes:
        taken_at: the capture instant, Unix seconds (for ``"exif-local"``: the wall clock
            read as UTC).
        taken_local: the wall clock where it was taken, as Unix seconds of that clock read
            as UTC (what date filters without a time zone compare with).
        taken_offset: minutes east of UTC (``None`` when EXIF gives no offset).
        taken_source: ``"exif"``, ``"exif-local"`` or ``"file"``.
        lat, lon: GPS position in degrees (``None`` without one).
        make, model: the camera, as EXIF names it.
        orientation: EXIF orientation 1-8 (1: upright).
    """

    taken_at: float
    taken_local: float
    taken_offset: int | None
    taken_source: str
    lat: float | None = None
    lon: float | None = None
    make: str | None = None
    model: str | None = None
    orientation: int = 1

    @property
    def taken(self) -> str:
        """The capture date in ISO 8601, with its offset when known."""
        local = datetime.fromtimestamp(self.taken_local, timezone.utc).replace(tzinfo=None)
        if self.taken_offset is None:
            return local.isoformat()
        return local.replace(tzinfo=timezone(timedelta(minutes=self.taken_offset))).isoformat()

    @property
    def camera(self) -> str | None:
        """``"make model"`` (the make once when the model repeats it)."""
        make, model = self.make or "", self.model or ""
        if model.lower().startswith(make.lower()):
            make = ""
        return " ".join(p for p in (make, model) if p) or None


Tags = dict
"""One EXIF directory as ``{tag: value}``."""


def read_exif(path: str | os.PathLike) -> tuple[Tags, Tags, Tags]:
    """The file's EXIF as ``(IFD0, Exif sub-IFD, GPS IFD)``, empty when it has none or
    cannot be read (never raises)."""
    if missing_plugin(path) is not None:
        return {}, {}, {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:  # header only; RAW files are TIFF-shaped
                return _directories(image.getexif())
    except Exception:
        if Path(path).suffix.lower() in RAW_SUFFIXES:
            return _raw_preview_exif(path)
        return {}, {}, {}


def _directories(exif: Image.Exif) -> tuple[Tags, Tags, Tags]:
    """Read while the file is open: some formats load the sub-IFDs lazily."""
    return dict(exif), dict(exif.get_ifd(_IFD.Exif)), dict(exif.get_ifd(_IFD.GPSInfo))


def _raw_preview_exif(path: str | os.PathLike) -> tuple[Tags, Tags, Tags]:
    """EXIF of a RAW file's embedded preview (CR3 and other non-TIFF RAW files)."""
    import rawpy

    try:
        with rawpy.imread(str(path)) as raw:
            thumb = raw.extract_thumb()
        if not isinstance(thumb.data, bytes):  # a bitmap preview carries no EXIF
            return {}, {}, {}
        with Image.open(io.BytesIO(thumb.data)) as image:
            return _directories(image.getexif())
    except Exception:
        return {}, {}, {}


def photo_meta(path: str | os.PathLike, mtime_ns: int) -> PhotoMeta:
    """Everything :class:`PhotoMeta` holds for one file (file time when EXIF has no date)."""
    base, sub, gps = read_exif(path)
    when = capture_time(sub)
    if when is None:
        seconds = mtime_ns / 1e9
        offset = datetime.fromtimestamp(seconds).astimezone().utcoffset() or timedelta()
        minutes = int(offset.total_seconds() // 60)
        when = (seconds, seconds + minutes * 60, minutes, "file")
    lat, lon = gps_position(gps)
    orientation = _int(base.get(_BASE.Orientation)) or 1
    return PhotoMeta(
        *when, lat=lat, lon=lon, make=_text(base.get(_BASE.Make)),
        model=_text(base.get(_BASE.Model)), orientation=orientation if 1 <= orientation <= 8 else 1,
    )  # fmt: skip


def capture_time(sub) -> tuple[float, float, int | None, str] | None:
    """``(taken_at, taken_local, offset_minutes, source)`` from the EXIF sub-IFD, or None."""
    text = _text(sub.get(_BASE.DateTimeOriginal))
    if not text:
        return None
    try:
        wall = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    fraction = _text(sub.get(_BASE.SubsecTimeOriginal)) or ""
    if fraction.isdigit():
        wall += timedelta(seconds=float("0." + fraction))
    local = wall.replace(tzinfo=timezone.utc).timestamp()
    match = _OFFSET.match(_text(sub.get(_BASE.OffsetTimeOriginal)) or "")
    if match is None:
        return local, local, None, "exif-local"
    minutes = int(match[2]) * 60 + int(match[3])
    minutes = -minutes if match[1] == "-" else minutes
    if abs(minutes) > 18 * 60:
        return local, local, None, "exif-local"
    return local - minutes * 60, local, minutes, "exif"


def gps_position(gps) -> tuple[float | None, float | None]:
    """Decimal degrees from GPSLatitude/Longitude (degrees, minutes, seconds) and refs."""
    lat = _degrees(gps.get(_GPS.GPSLatitude), gps.get(_GPS.GPSLatitudeRef), "S", 90)
    lon = _degrees(gps.get(_GPS.GPSLongitude), gps.get(_GPS.GPSLongitudeRef), "W", 180)
    if lat is None or lon is None:
        return None, None
    return lat, lon


def _degrees(value, ref, negative: str, limit: float) -> float | None:
    try:
        d, m, s = (float(x) for x in value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    degrees = d + m / 60 + s / 3600
    if not math.isfinite(degrees) or abs(degrees) > limit:
        return None
    return -degrees if _text(ref) == negative else degrees


def _text(value) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value or None


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
