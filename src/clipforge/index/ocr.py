"""Text in images: recognised at indexing time, stored in SQLite FTS5, matched at query time.

Recognition runs an ONNX OCR model (PP-OCRv4 detection + recognition, and the PP-OCR
text-direction classifier) through the ``rapidocr_onnxruntime`` package, whose wheel ships
the three ``.onnx`` files: nothing is downloaded, so it works offline (``pip install
'clipforge[ocr]'``). Any object with a ``name`` and ``__call__(image) -> list[OcrLine]``
(:class:`OcrEngine`) can stand in for it.

Storage, next to the index's ``images`` table in ``metadata.sqlite``, keyed by the image id:

- ``ocr_text``: an FTS5 table (``trigram`` tokenizer: case-insensitive substring match, so
  a word the recogniser glued to its neighbour — ``invoicequartz`` — is still found);
- ``ocr_lines``: the recognised lines with their boxes (JSON), one row per image read,
  also for images without text (the row marks the image as done);
- a trigger deletes both when the image row goes (removed, or replaced by new bytes, which
  get a new id and are read again on the next run).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from PIL import Image, ImageOps

from ..errors import ConfigError, UsageError
from ..preprocess import load_image
from .metadata import MetadataStore, _fs

if TYPE_CHECKING:
    from .index import Index
    from .report import IndexReport

OCR_PACKAGE = "rapidocr_onnxruntime"
OCR_META_KEY = "ocr_engine"
"""``meta`` key: the engine that reads new images (set by ``--ocr``, cleared by ``--no-ocr``)."""
MIN_WORD = 3
"""The trigram tokenizer matches words of at least this many characters."""
DECODE_MIN_SIDE = 1500
"""JPEGs are decoded at reduced size (DCT scaling) down to this side: the detector works
at <= 2000 px anyway."""
BATCH = 16
"""Images read per committed transaction."""

SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS ocr_text USING fts5(text, tokenize='trigram');
CREATE TABLE IF NOT EXISTS ocr_lines (
    id INTEGER PRIMARY KEY,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    lines TEXT NOT NULL,
    engine TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS ocr_forget AFTER DELETE ON images BEGIN
    DELETE FROM ocr_text WHERE rowid = old.id;
    DELETE FROM ocr_lines WHERE id = old.id;
END;
"""
_MARK_OPEN, _MARK_CLOSE = "\x02", "\x03"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class OcrUnavailableError(ConfigError):
    """Text recognition was asked for but its package (or SQLite's FTS5 trigram) is missing."""


class NoOcrTextError(UsageError):
    """A text-only query on an index that was never read with ``--ocr``."""

    http_status = 409


@dataclass(frozen=True)
class OcrLine:
    """One recognised line: its text, axis-aligned box ``(x0, y0, x1, y1)`` in pixels of the
    upright image, and the recogniser's confidence."""

    text: str
    box: tuple[float, float, float, float]
    confidence: float


@runtime_checkable
class OcrEngine(Protocol):
    """Reads the text lines of an RGB image."""

    name: str

    def __call__(self, image: Image.Image) -> list[OcrLine]: ...


class RapidOcrEngine:
    """PP-OCRv4 through ``rapidocr_onnxruntime`` (models inside its wheel; CPU)."""

    def __init__(self, min_confidence: float = 0.5) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as err:
            raise OcrUnavailableError(
                f"--ocr needs the {OCR_PACKAGE} package (its wheel ships the ONNX models): "
                f"pip install 'clipforge[ocr]' ({err})"
            ) from err
        self._engine = RapidOCR(text_score=min_confidence)
        version = importlib_metadata.version(OCR_PACKAGE)
        self.name = f"{OCR_PACKAGE} {version} PP-OCRv4"

    def __call__(self, image: Image.Image) -> list[OcrLine]:
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])  # OpenCV order
        found, _ = self._engine(bgr)
        lines = []
        for quad, text, confidence in found or []:
            xs, ys = [float(p[0]) for p in quad], [float(p[1]) for p in quad]
            box = (min(xs), min(ys), max(xs), max(ys))
            lines.append(OcrLine(str(text), box, float(confidence)))
        return lines


# -- schema and engine choice ---------------------------------------------------------
def ensure_schema(db: sqlite3.Connection) -> None:
    """Create the OCR tables and trigger (refused clearly without FTS5's trigram tokenizer)."""
    try:
        db.executescript(SCHEMA)
    except sqlite3.OperationalError as err:
        raise OcrUnavailableError(
            f"--ocr needs SQLite with FTS5 and its trigram tokenizer (3.34+; this is "
            f"{sqlite3.sqlite_version}): {err}"
        ) from err


def has_text(db: sqlite3.Connection) -> bool:
    """Whether any image of this index has been read by OCR."""
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ocr_lines'"
    ).fetchone()
    return (
        exists is not None and db.execute("SELECT 1 FROM ocr_lines LIMIT 1").fetchone() is not None
    )


def choose_engine(meta: MetadataStore, ocr: bool | OcrEngine | None) -> OcrEngine | None:
    """The engine for this run: ``None`` keeps what the index records (on once ``--ocr``
    was given), ``True`` / an engine turns it on, ``False`` off; the choice is recorded."""
    if ocr is None:
        if meta.get_meta(OCR_META_KEY) is None:
            return None
        ocr = True
    if ocr is False:
        with meta.transaction():
            meta.db.execute("DELETE FROM meta WHERE key = ?", (OCR_META_KEY,))
        return None
    engine = RapidOcrEngine() if ocr is True else ocr
    if not isinstance(engine, OcrEngine):
        raise UsageError(f"ocr must be True, False, None or an OcrEngine, got {ocr!r}")
    ensure_schema(meta.db)
    with meta.transaction():
        meta.set_meta(OCR_META_KEY, engine.name)
    return engine


def describe(db: sqlite3.Connection) -> dict | None:
    """Engine and counts of the recognised text (``None``: never used)."""
    if not has_text(db):
        return None
    row = db.execute("SELECT COUNT(*), SUM(lines != '[]') FROM ocr_lines").fetchone()
    engine = db.execute("SELECT value FROM meta WHERE key = ?", (OCR_META_KEY,)).fetchone()
    return {"engine": engine and engine[0], "read": row[0], "with_text": row[1] or 0}


# -- recognition pass --------------------------------------------------------------
def read_image(path: str) -> Image.Image:
    """The image upright (EXIF orientation applied), in RGB, as the recogniser sees it."""
    image = load_image(path, min_size=DECODE_MIN_SIDE)
    return ImageOps.exif_transpose(image).convert("RGB")


def recognise_pending(index: Index, engine: OcrEngine, report: IndexReport) -> None:
    """Read every indexed image that has no OCR row yet, committing every :data:`BATCH`
    images (so a crash loses at most one batch, which the next run reads again)."""
    db = index.meta.db
    start = time.perf_counter()
    pending = db.execute(
        "SELECT id, path FROM images WHERE id NOT IN (SELECT id FROM ocr_lines) ORDER BY id"
    ).fetchall()
    for first in range(0, len(pending), BATCH):
        rows = []
        for id_, stored in pending[first : first + BATCH]:
            path = _fs(stored)
            try:
                image = read_image(path)
                lines = engine(image)
            except Exception as exc:  # unreadable now, or the engine failed: recorded empty
                report.ocr_failed.append((path, f"text recognition: {exc}"))
                image, lines = None, []
            rows.append((id_, image, lines))
        with index.meta.transaction():
            for id_, image, lines in rows:
                _store(db, id_, image, lines, engine.name)
        report.ocr_read += len(rows)
    report.ocr_seconds = time.perf_counter() - start


def _store(db, id_: int, image: Image.Image | None, lines: list[OcrLine], engine: str) -> None:
    clean = [OcrLine(_CONTROL.sub(" ", ln.text).strip(), ln.box, ln.confidence) for ln in lines]
    clean = [ln for ln in clean if ln.text]
    width, height = image.size if image is not None else (0, 0)
    payload = [{"text": ln.text, "box": [round(v, 1) for v in ln.box],
                "confidence": round(ln.confidence, 4)} for ln in clean]  # fmt: skip
    db.execute(
        "INSERT OR REPLACE INTO ocr_lines VALUES (?, ?, ?, ?, ?)",
        (id_, width, height, json.dumps(payload), engine),
    )
    db.execute("DELETE FROM ocr_text WHERE rowid = ?", (id_,))
    if clean:
        text = "\n".join(ln.text for ln in clean)
        db.execute("INSERT INTO ocr_text (rowid, text) VALUES (?, ?)", (id_, text))


# -- queries ---------------------------------------------------------------------------
def fts_query(text: str | Sequence[str] | None) -> str | None:
    """The FTS5 query for a search text: every word of >= :data:`MIN_WORD` characters must
    occur (any order, any case, also inside a longer run of letters); ``None`` if none."""
    if not text:
        return None
    joined = text if isinstance(text, str) else " ".join(text)
    words = [w for w in re.findall(r"\w+", joined.lower()) if len(w) >= MIN_WORD]
    return " AND ".join(f'"{w}"' for w in dict.fromkeys(words)) or None


def text_matches(
    db: sqlite3.Connection, query: str, limit: int, where: tuple[str, list] | None = None
) -> list[int]:
    """Ids of images whose text matches ``query`` (from :func:`fts_query`), best BM25 first,
    restricted to ``SELECT id FROM images WHERE <where>`` when given."""
    sql = "SELECT rowid FROM ocr_text WHERE ocr_text MATCH ?"
    params: list = [query]
    if where is not None:
        sql += f" AND rowid IN (SELECT id FROM images WHERE {where[0]})"
        params += where[1]
    sql += " ORDER BY rank, rowid LIMIT ?"
    return [row[0] for row in db.execute(sql, [*params, int(limit)])]


@dataclass(frozen=True)
class TextMatch:
    """Where a query's words occur in an image's recognised text.

    ``spans``: ``[start, end)`` character offsets in ``text`` (lines joined by ``\\n``);
    ``boxes``: one ``(x0, y0, x1, y1)`` per span, estimated from its line's box by
    character position, in pixels of the ``width`` x ``height`` upright image.
    """

    text: str
    spans: list[tuple[int, int]] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    width: int = 0
    height: int = 0

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "spans": [list(s) for s in self.spans],
            "boxes": [[round(v, 1) for v in b] for b in self.boxes],
            "width": self.width,
            "height": self.height,
        }


def match_details(db: sqlite3.Connection, query: str, ids: Sequence[int]) -> dict[int, TextMatch]:
    """:class:`TextMatch` of each of ``ids`` whose text matches ``query``."""
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    found = db.execute(
        f"SELECT t.rowid, highlight(ocr_text, 0, ?, ?), l.width, l.height, l.lines"
        f" FROM ocr_text t JOIN ocr_lines l ON l.id = t.rowid"
        f" WHERE ocr_text MATCH ? AND t.rowid IN ({marks})",
        [_MARK_OPEN, _MARK_CLOSE, query, *[int(i) for i in ids]],
    ).fetchall()
    out = {}
    for id_, marked, width, height, lines in found:
        text, spans = _spans(marked)
        boxes = _span_boxes(json.loads(lines), spans)
        out[int(id_)] = TextMatch(text, spans, boxes, width, height)
    return out


def _spans(marked: str) -> tuple[str, list[tuple[int, int]]]:
    """Text without the highlight marks, and the marked ``[start, end)`` ranges."""
    text, spans, start = [], [], 0
    for piece in re.split(f"([{_MARK_OPEN}{_MARK_CLOSE}])", marked):
        if piece == _MARK_OPEN:
            start = sum(map(len, text))
        elif piece == _MARK_CLOSE:
            spans.append((start, sum(map(len, text))))
        else:
            text.append(piece)
    return "".join(text), spans


def _span_boxes(lines: list[dict], spans: list[tuple[int, int]]) -> list:
    """The part of its line's box each span covers, by character position in the line."""
    starts = np.cumsum([0] + [len(ln["text"]) + 1 for ln in lines])
    boxes = []
    for start, end in spans:
        row = int(np.searchsorted(starts, start, side="right") - 1)
        line = lines[min(row, len(lines) - 1)]
        x0, y0, x1, y1 = line["box"]
        n = max(len(line["text"]), 1)
        a, b = int(start - starts[row]), min(int(end - starts[row]), n)
        boxes.append((x0 + (x1 - x0) * a / n, float(y0), x0 + (x1 - x0) * b / n, float(y1)))
    return boxes
