"""CoCa caption generation: the same token ids as open_clip's ``CoCa.generate`` on the same
(perturbed, random) weights and torch seeds, for top-k (greedy at ``top_k=1``), top-p and
group beam search.

transformers 5 removed ``BeamSearchScorer``, so open_clip's ``coca_model`` marks generation
unavailable; its other helpers still exist. The reference gets them back for the duration of
a test (``monkeypatch`` on ``open_clip.coca_model``'s globals): the logits processors from the
installed transformers, the beam scorer from transformers 4.57.1's own ``beam_search.py``
(read from its wheel, fetched with ``pip download`` when not already present). clipforge's
generation does not use transformers.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import transformers.generation as hf_generation
from open_clip import coca_model

import clipforge
from clipforge.errors import UsageError

from ..checkpoints.test_parity_coca import model_cfg, reference, write_hub
from ..conftest import sample_images

pytestmark = pytest.mark.parity

SOT, EOS = 62, 63  # the tiny vocabulary's start / end ids
BASE = {"sot_token_id": SOT, "eos_token_id": EOS, "seq_len": 10, "min_seq_len": 3}
WHEEL = "transformers-4.57.1-py3-none-any.whl"


def _wheel(tmp: Path) -> Path:
    for candidate in (Path("/tmp/tfdl") / WHEEL, tmp / WHEEL):
        if candidate.is_file():
            return candidate
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "transformers==4.57.1", "--no-deps", "-q",
         "-d", str(tmp)], check=True,
    )  # fmt: skip
    return tmp / WHEEL


@pytest.fixture(scope="module")
def beam_search_scorer(tmp_path_factory) -> type:
    """transformers 4.57.1's ``BeamSearchScorer`` (its module, loaded beside the installed
    transformers' ``generation`` package)."""
    tmp = tmp_path_factory.mktemp("tf457")
    with zipfile.ZipFile(_wheel(tmp)) as wheel:
        for name in ("beam_constraints", "beam_search"):
            wheel.extract(f"transformers/generation/{name}.py", tmp)
    module = None
    for name in ("beam_constraints", "beam_search"):
        spec = importlib.util.spec_from_file_location(
            f"transformers.generation.{name}", tmp / "transformers" / "generation" / f"{name}.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module.BeamSearchScorer  # type: ignore[union-attr]


@pytest.fixture
def open_clip_generation(monkeypatch, beam_search_scorer) -> None:
    """open_clip's ``generate`` enabled, with the installed transformers' processors."""
    names = ("LogitsProcessorList", "TopPLogitsWarper", "TopKLogitsWarper",
             "RepetitionPenaltyLogitsProcessor", "MinLengthLogitsProcessor", "MaxLengthCriteria",
             "StoppingCriteriaList")  # fmt: skip
    for name in names:
        monkeypatch.setattr(coca_model, name, getattr(hf_generation, name), raising=False)
    monkeypatch.setattr(coca_model, "BeamSearchScorer", beam_search_scorer, raising=False)
    monkeypatch.setattr(coca_model, "_has_transformers", True)
    monkeypatch.setattr(coca_model, "GENERATION_TYPES", {
        "top_k": hf_generation.TopKLogitsWarper,
        "top_p": hf_generation.TopPLogitsWarper,
        "beam_search": "beam_search"})  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> clipforge.CLIP:
    return clipforge.load(write_hub("attn-pool", tmp_path_factory.mktemp("coca") / "hub"))


CASES = {
    "greedy": {"generation_type": "top_k", "top_k": 1},
    "top_k": {"generation_type": "top_k", "top_k": 5, "temperature": 0.7},
    "top_p": {"generation_type": "top_p", "top_p": 0.9, "temperature": 1.5},
    "top_p_fixed_length": {"generation_type": "top_p", "top_p": 0.8, "fixed_output_length": True,
                           "repetition_penalty": 1.3},
    "beam_search": {"generation_type": "beam_search", "num_beams": 4, "num_beam_groups": 2},
    "beam_search_one_group": {"generation_type": "beam_search", "num_beams": 3,
                              "num_beam_groups": 1, "repetition_penalty": 1.2},
    "beam_search_fixed_length": {"generation_type": "beam_search", "num_beams": 6,
                                 "num_beam_groups": 3, "fixed_output_length": True},
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_generate_equals_open_clip(case, tiny, open_clip_generation):
    options = {**BASE, **CASES[case]}
    images = sample_images(32, n=3)
    for seed in (0, 1):
        torch.manual_seed(seed)
        expected = reference("attn-pool").generate(images, **options)
        torch.manual_seed(seed)
        got = tiny.generate(images, **options)
        assert torch.equal(got, expected), (case, seed, got, expected)
    assert got.shape[0] == 3 and (got[:, 0] == SOT).all()


def test_generation_options_are_checked(tiny):
    images = sample_images(32, n=1)
    with pytest.raises(UsageError, match="generation_type"):
        tiny.generate(images, generation_type="nucleus")
    with pytest.raises(UsageError, match="num_beams"):
        tiny.generate(images, num_beams=4, num_beam_groups=3)
    with pytest.raises(UsageError, match="min_seq_len"):
        tiny.generate(images, seq_len=5, min_seq_len=5)
    assert model_cfg("attn-pool")["text_cfg"]["vocab_size"] == 64
