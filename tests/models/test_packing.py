"""Sequence packing in causal text towers: prompts end to end in shared rows give the same
features as each prompt encoded alone (exact in float64), and the packed path is taken."""

from __future__ import annotations

import pytest
import torch

import clipforge
from clipforge.models import packing
from clipforge.quantization import quantize

from ..conftest import perturb_, tiny_vit_config

TINY = tiny_vit_config()
PROMPTS = [
    "a",
    "a photo of a big red dog running on the green grass in the park",
    "two cats",
    "a bowl of soup",
    "x " * 100,  # fills the whole context (truncated)
    "a small boat on a lake at dawn",
    "",
    "a man in a blue shirt standing on a ladder cleaning the windows of a house",
]


@pytest.fixture(scope="module")
def text64() -> clipforge.CLIP:
    torch.manual_seed(0)
    return perturb_(clipforge.create_model(TINY, towers="text")).double().eval()


def test_plan_rows_places_every_prompt_once_within_capacity():
    lengths = [5, 77, 12, 30, 30, 1, 64, 13, 2]
    rows = packing.plan_rows(lengths, 77)
    placed = sorted(i for row in rows for i in row)
    assert placed == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 77 for row in rows)
    assert len(rows) == 4  # 234 tokens: ceil(234 / 77) = 4 rows, first-fit decreasing


def test_packed_batch_equals_each_prompt_alone(text64, monkeypatch):
    tokens = text64.tokenize(PROMPTS)
    calls = []
    real_pack = packing.pack

    def spy(*args):
        calls.append(result := real_pack(*args))
        return result

    monkeypatch.setattr("clipforge.models.text.pack", spy)
    with torch.no_grad():
        packed = text64.text(tokens)
        alone = torch.cat([text64.text(tokens[i : i + 1]) for i in range(len(PROMPTS))])
        full = text64.text(tokens, trim_padding=False)
    assert calls and calls[0] is not None  # the batch really went through the packed path
    assert calls[0].tokens.numel() < 0.8 * tokens.numel()
    assert (packed - alone).abs().max() < 1e-12
    assert (packed - full).abs().max() < 1e-12


def test_packing_keeps_float32_within_parity_and_int8_close(text64):
    model = clipforge.create_model(TINY, towers="text").eval()
    model.load_state_dict({k: v.float() for k, v in text64.state_dict().items()})
    tokens = model.tokenize(PROMPTS)
    with torch.no_grad():
        packed = model.text(tokens)
        full = model.text(tokens, trim_padding=False)
        assert (packed - full).abs().max() < 1e-5
        int8 = quantize(model, calibration=None).text(tokens)
    cosine = torch.nn.functional.cosine_similarity(int8, full).min()
    assert cosine > 0.99


def test_no_packing_when_prompts_are_alike(text64):
    tokens = text64.tokenize(["a red car", "a blue car", "a green car"])
    eot = tokens.argmax(dim=-1)
    assert packing.pack(tokens, eot, 77) is None  # equal lengths: nothing to save
