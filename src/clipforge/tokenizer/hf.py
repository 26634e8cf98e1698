"""Tokenizers of Hugging Face text towers (XLM-R, RoBERTa, mT5, NLLB-200 and any other
``tokenizer.json``), without transformers: open_clip's ``HFTokenizer`` semantics on the
``tokenizers`` library.

transformers ≥ 5 does not run a hub ``tokenizer.json`` as it is for these classes: it keeps
the file's vocabulary (and merges, and SentencePiece's precompiled normaliser) and rebuilds
the rest of the pipeline as the class defines it (pre-tokeniser, model flags, template).
:func:`class_pipeline` does the same from the ``tokenizer_class`` of the checkpoint's
``tokenizer_config.json``, so the ids equal transformers' (``tests/tokenizer/test_hf_tokenizer.py``
compares them on text in a dozen scripts). An unknown or absent class runs the file as is.

open_clip's ``HFTokenizer`` cleans text first (``clean="whitespace"``: ftfy, HTML unescape,
whitespace collapsed; ``"lower"`` also lower-cases), pads every row to the context with the
pad token and truncates keeping the end-of-sequence token. NLLB's language code (the first
token, which NLLB-CLIP pools) is set with ``language=`` / :meth:`HFTokenizer.set_language`
(default ``eng_Latn``, as transformers').
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ftfy
import numpy as np

from ..errors import UsageError
from .sentencepiece import (
    TOKENIZER_CONFIG,
    TOKENIZER_FILE,
    SentencePieceTokenizer,
    _special_token,
    _tokenizer_config,
)

__all__ = ["HF_TOKENIZER_CLASSES", "HFTokenizer", "class_pipeline", "clean_text", "post_processor"]

#: the transformers tokenizer classes whose pipeline :func:`class_pipeline` rebuilds
HF_TOKENIZER_CLASSES = ("XLMRobertaTokenizer", "T5Tokenizer", "NllbTokenizer", "RobertaTokenizer")
_ALIASES = {"MT5Tokenizer": "T5Tokenizer"}
#: the SentencePiece model files a checkpoint may ship instead of ``tokenizer.json``
SPM_FILES = ("sentencepiece.bpe.model", "spiece.model")
CLEANS = ("whitespace", "lower", "none")
#: written into a saved ``tokenizer_config.json``: the directory holds an :class:`HFTokenizer`
HF_MARKER = "clipforge_hf_tokenizer"
#: ``config.json`` model types → the tokenizer class transformers' ``AutoTokenizer`` picks
#: (hub repositories without a ``tokenizer_config.json``, e.g. ``xlm-roberta-base``)
_MODEL_TYPE_CLASSES = {"xlm-roberta": "XLMRobertaTokenizer", "roberta": "RobertaTokenizer",
                       "mt5": "T5Tokenizer", "t5": "T5Tokenizer"}  # fmt: skip
DEFAULT_LANGUAGE = "eng_Latn"


def clean_text(text: str, clean: str = "whitespace") -> str:
    """open_clip's HF cleaning: ``whitespace`` (ftfy, HTML unescaped twice, whitespace
    collapsed), ``lower`` (the same, lower-cased) or ``none``."""
    if clean == "none":
        return text
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    text = " ".join(text.split()).strip()
    return text.lower() if clean == "lower" else text


def tokenizer_class(config: dict[str, Any]) -> str | None:
    """The transformers class a tokenizer config names, without ``Fast`` (``None``: none)."""
    name = config.get("tokenizer_class")
    if not isinstance(name, str):
        return None
    name = name.removesuffix("Fast")
    return _ALIASES.get(name, name)


def model_type_class(directory: Path) -> str | None:
    """The tokenizer class of the ``model_type`` in a directory's ``config.json``, if known."""
    path = directory / "config.json"
    if not path.is_file():
        return None
    try:
        model_type = json.loads(path.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError):
        return None
    return _MODEL_TYPE_CLASSES.get(model_type) if isinstance(model_type, str) else None


def _charsmap(data: dict[str, Any]) -> str | None:
    """The base64 precompiled SentencePiece charsmap in a tokenizer.json's normaliser."""
    normalizer = data.get("normalizer") or {}
    parts = (
        normalizer.get("normalizers", [normalizer])
        if normalizer.get("type") == "Sequence"
        else [normalizer]
    )
    return next((p["precompiled_charsmap"] for p in parts if p.get("type") == "Precompiled"), None)


def _metaspace(split: bool = True) -> dict[str, Any]:
    return {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": split}


def class_pipeline(data: dict[str, Any], cls: str | None, config: dict[str, Any]) -> dict[str, Any]:
    """``tokenizer.json`` data rebuilt as transformers ≥ 5's class ``cls`` builds it from the
    file (vocabulary, merges and charsmap kept); other classes: the data unchanged."""
    if cls not in HF_TOKENIZER_CLASSES:
        return data
    data = dict(data, model=dict(data["model"]), decoder=None)
    charsmap = _charsmap(data)
    precompiled = {"type": "Precompiled", "precompiled_charsmap": charsmap} if charsmap else None
    if cls in ("XLMRobertaTokenizer", "T5Tokenizer"):
        data["model"].update(unk_id=3 if cls == "XLMRobertaTokenizer" else 2, byte_fallback=False)
        data["normalizer"] = precompiled
        split = [{"type": "WhitespaceSplit"}, _metaspace()]
        data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": split}
        data["post_processor"] = None  # post_processor()
    elif cls == "NllbTokenizer":
        data["model"].update(dropout=None, fuse_unk=True, byte_fallback=False)
        data["normalizer"] = precompiled and {"type": "Sequence", "normalizers": [
            precompiled, {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]}  # fmt: skip
        data["pre_tokenizer"] = _metaspace()
        data["post_processor"] = None  # per language (HFTokenizer.set_language)
    else:  # RobertaTokenizer: byte-level BPE
        prefix = bool(config.get("add_prefix_space", False))
        data["model"].update(dropout=None, continuing_subword_prefix="", end_of_word_suffix="",
                             fuse_unk=False)  # fmt: skip
        data["normalizer"] = None
        data["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": prefix,
                                 "trim_offsets": True, "use_regex": True}  # fmt: skip
        data["post_processor"] = None  # post_processor()
    return data


def post_processor(backend: Any, cls: str | None, config: dict[str, Any]) -> Any:
    """The template transformers ≥ 5's class ``cls`` adds (``<s> $A </s>``, ``$A </s>``,
    RoBERTa's), or ``None`` to keep the backend's (NLLB's is set per language)."""
    from tokenizers import processors

    if cls not in ("XLMRobertaTokenizer", "T5Tokenizer", "RobertaTokenizer"):
        return None
    bos = _special_token(config, "bos_token") or "<s>"
    eos = _special_token(config, "eos_token") or "</s>"
    ids = {t: backend.token_to_id(t) for t in (bos, eos)}
    if cls == "RobertaTokenizer":
        prefix = bool(config.get("add_prefix_space", False))
        return processors.RobertaProcessing((eos, ids[eos]), (bos, ids[bos]), True, prefix)
    single = [bos, "$A", eos] if cls == "XLMRobertaTokenizer" else ["$A", eos]
    return processors.TemplateProcessing(
        single=single, special_tokens=[(t, ids[t]) for t in single if t != "$A"]
    )


def spm_to_json(model_file: Path, cls: str | None) -> dict[str, Any]:
    """``tokenizer.json`` data for a SentencePiece model (checkpoints that ship no
    ``tokenizer.json``, e.g. mT5's ``spiece.model``), converted by transformers' class as
    ``from_pretrained`` converts it (needs transformers, sentencepiece and protobuf, once,
    at load time; the converted tokenizer can be saved with :meth:`HFTokenizer.save`)."""
    try:
        import transformers
    except ImportError as err:
        raise ImportError(
            f"reading {model_file} needs transformers, sentencepiece and protobuf (pip install "
            "'clipforge[dev]'), or ship the checkpoint's tokenizer.json"
        ) from err
    reader = getattr(transformers, cls or "T5Tokenizer")
    return json.loads(reader.from_pretrained(str(model_file.parent)).backend_tokenizer.to_str())


class HFTokenizer(SentencePieceTokenizer):
    """Texts → ``(N, context_length)`` int64 ids, as open_clip's ``HFTokenizer`` makes them.

    Args:
        tokenizer_file: the checkpoint's ``tokenizer.json`` (or its SentencePiece model);
            the ``tokenizer_config.json`` beside it names the class, pad token and language.
        context_length: pad/truncate to this many ids (open_clip's default 77).
        clean: ``"whitespace"`` (open_clip's default), ``"lower"`` or ``"none"``.
        language: NLLB's source language code (``None``: the config's ``src_lang``, else
            ``eng_Latn``); refused for tokenizers without language codes.
        strip_sep_token: write 0 over every separator id (the config's ``sep_token``, else
            ``[SEP]``), as open_clip's ``HFTokenizer(strip_sep_token=True)`` does (CLIPA).
    """

    def __init__(
        self,
        tokenizer_file: str | Path,
        context_length: int = 77,
        clean: str = "whitespace",
        language: str | None = None,
        pad_token: str | None = None,
        strip_sep_token: bool = False,
    ) -> None:
        from tokenizers import Tokenizer

        if clean not in CLEANS:
            raise UsageError(f"clean must be one of {', '.join(CLEANS)}, got {clean!r}")
        path = Path(tokenizer_file)
        config = _tokenizer_config(path.parent)
        self.tokenizer_class = tokenizer_class(config) or model_type_class(path.parent)
        data = spm_to_json(path, self.tokenizer_class) if path.suffix == ".model" else (
            json.loads(path.read_text(encoding="utf-8")))  # fmt: skip
        self.backend = Tokenizer.from_str(
            json.dumps(class_pipeline(data, self.tokenizer_class, config))
        )
        template = post_processor(self.backend, self.tokenizer_class, config)
        if template is not None:
            self.backend.post_processor = template
        self.backend.no_truncation()
        self.backend.no_padding()
        self.context_length, self.clean, self.padding_side = context_length, clean, "right"
        pad_token = pad_token or _special_token(config, "pad_token") or next(
            (t for t in ("<pad>", "[PAD]") if self.backend.token_to_id(t) is not None), "<pad>"
        )  # no config: BERT vocabularies (CLIPA's bert-base-uncased) name it [PAD]
        pad_id = self.backend.token_to_id(pad_token)
        if pad_id is None:
            raise UsageError(f"pad token {pad_token!r} is not in the vocabulary of {path}")
        self.pad_token, self.pad_id = pad_token, pad_id
        self._configured = {}
        self.sep_id = self._sep_id(config, path) if strip_sep_token else None
        self.eos_token = _special_token(config, "eos_token") or "</s>"
        self.legacy_behaviour = bool(config.get("legacy_behaviour", False))
        self.language: str | None = None
        if self.tokenizer_class == "NllbTokenizer":
            self.set_language(language or config.get("src_lang") or DEFAULT_LANGUAGE)
        elif language is not None:
            raise UsageError(
                f"{path}: a {self.tokenizer_class or 'generic'} tokenizer has no language codes"
            )

    def _sep_id(self, config: dict[str, Any], path: Path) -> int:
        """The separator's id (for ``strip_sep_token``); a ``UsageError`` if it has none."""
        self.sep_token = _special_token(config, "sep_token") or "[SEP]"
        sep_id = self.backend.token_to_id(self.sep_token)
        if sep_id is None:
            raise UsageError(
                f"strip_sep_token: {self.sep_token!r} is not in the vocabulary of {path}"
            )
        return sep_id

    def set_language(self, language: str) -> None:
        """NLLB: make ``language`` (e.g. ``"fra_Latn"``) the code around every text (first,
        or after ``</s>`` with ``legacy_behaviour``)."""
        from tokenizers import processors

        if self.tokenizer_class != "NllbTokenizer":
            raise UsageError(
                f"a {self.tokenizer_class or 'generic'} tokenizer has no language codes"
            )
        lang_id = self.backend.token_to_id(language)
        if lang_id is None or not language.count("_"):
            raise UsageError(
                f"unknown language code {language!r} (NLLB codes look like 'fra_Latn')"
            )
        eos, eos_id = self.eos_token, self.backend.token_to_id(self.eos_token)
        single = ["$A", eos, language] if self.legacy_behaviour else [language, "$A", eos]
        self.backend.post_processor = processors.TemplateProcessing(
            single=single, special_tokens=[(eos, eos_id), (language, lang_id)]
        )
        self.language, self._configured = language, {}

    @classmethod
    def from_dir(  # type: ignore[override]
        cls, directory: str | Path, context_length: int = 77, clean: str = "whitespace",
        language: str | None = None, strip_sep_token: bool = False,
    ) -> HFTokenizer:  # fmt: skip
        """The tokenizer of a checkpoint directory: ``tokenizer.json``, else its SentencePiece
        model (``sentencepiece.bpe.model``, ``spiece.model``)."""
        directory = Path(directory)
        for name in (TOKENIZER_FILE, *SPM_FILES):
            if (directory / name).is_file():
                return cls(directory / name, context_length, clean, language,
                           strip_sep_token=strip_sep_token)  # fmt: skip
        raise UsageError(f"{directory}: no {TOKENIZER_FILE} or SentencePiece model")

    def to_array(
        self, texts: str | Sequence[str], context_length: int | None = None, truncate: bool = True
    ) -> np.ndarray:
        """Texts → ``(N, context_length)`` int64 ids (numpy; no torch needed)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = context_length or self.context_length
        ids = [e.ids for e in self._backend(length, truncate).encode_batch(
            [clean_text(t, self.clean) for t in texts])]  # fmt: skip
        too_long = [i for i, row in enumerate(ids) if len(row) > length]
        if too_long:
            raise UsageError(f"text {too_long[0]} is longer than the context ({length} ids)")
        out = np.asarray(ids, dtype=np.int64).reshape(len(texts), length)
        if self.sep_id is not None:
            out[out == self.sep_id] = 0
        return out

    def save(self, directory: str | Path) -> dict[str, Any]:
        """Write ``tokenizer.json`` (the rebuilt pipeline) and ``tokenizer_config.json``;
        returns the spec :func:`clipforge.tokenizer.files.load_tokenizer` reads."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / TOKENIZER_FILE).write_text(self.backend.to_str(), encoding="utf-8")
        config: dict[str, Any] = {"tokenizer_class": self.tokenizer_class or "PreTrainedTokenizerFast",
                                  "pad_token": self.pad_token, "eos_token": self.eos_token,
                                  "model_max_length": self.context_length,
                                  HF_MARKER: {"clean": self.clean}}  # fmt: skip
        strip = {"strip_sep_token": True} if self.sep_id is not None else {}
        if strip:
            config.update(sep_token=self.sep_token, **{HF_MARKER: {"clean": self.clean, **strip}})
        if self.language is not None:
            config.update(src_lang=self.language, legacy_behaviour=self.legacy_behaviour)
        (directory / TOKENIZER_CONFIG).write_text(json.dumps(config, indent=2) + "\n", "utf-8")
        return {"kind": "hf", "file": TOKENIZER_FILE, "pad_token": self.pad_token,
                "clean": self.clean, "context_length": self.context_length,
                "language": self.language, **strip}  # fmt: skip
