"""``forward_intermediates`` reproduces open_clip 3.x's (same keys, every tensor ≤ 1e-5, fp32)
for a CLIP ViT, a ModifiedResNet, SigLIP, SigLIP 2 and EVA-02 on tiny random models, and
``stop_early`` runs fewer blocks (counted with forward hooks)."""

from __future__ import annotations

import functools

import pytest
import torch

import clipforge
from clipforge.checkpoints.formats import (
    open_clip as open_clip_format,
    siglip_keys,
    to_native_state,
)
from clipforge.models.intermediates import take_indices

from ..checkpoints import (
    test_parity_eva as eva,
    test_parity_open_clip as oc,
    test_parity_siglip as siglip,
)
from ..conftest import max_diff, sample_images, sample_tokens

TOL = 1e-5
pytestmark = pytest.mark.parity

#: argument sets: defaults; lists (negative), NLC, prefix, norm, logits; int + stop_early;
#: intermediates only with stop_early
CASES = {
    "defaults": {},
    "list-nlc-extra": dict(
        image_indices=[0, -1], text_indices=[-2], image_output_fmt="NLC",
        image_output_extra_tokens=True, normalize_intermediates=True, output_logits=True,
        output_logit_scale_bias=True,
    ),
    "list-nchw-extra": dict(image_indices=[-2, 0], image_output_extra_tokens=True),
    "int-stop-early": dict(image_indices=1, text_indices=1, stop_early=True, normalize=False),
    # open_clip's CLIP ignores stop_early in its text tower: this case is image-only
    "penultimate-stop-early-image": dict(image_indices=[-2], stop_early=True),
    "only-stop-early": dict(
        image_indices=[0], text_indices=[0], stop_early=True, intermediates_only=True,
        image_output_fmt="NLC",
    ),
}  # fmt: skip


@functools.cache
def _pair(family: str) -> tuple[torch.nn.Module, clipforge.CLIP, int, torch.Tensor]:
    """(open_clip reference, clipforge twin with its weights, image size, token ids)."""
    if family in ("vit", "resnet"):
        ref, cfg = oc._reference(f"tiny-{family}")
        model = clipforge.create_model(open_clip_format.config_to_native(cfg))
        model.load_state_dict(to_native_state(ref.state_dict(), "open_clip"))
        text = cfg["text_cfg"]
        tokens = sample_tokens(text["context_length"], text["vocab_size"])
        return ref, model.eval(), cfg["vision_cfg"]["image_size"], tokens
    if family in ("siglip", "siglip2"):
        name = "B-16" if family == "siglip" else "B-32-v2"
        ref = siglip._reference(name)
        model = clipforge.create_model(siglip._native_config(name))
        model.load_state_dict(siglip_keys.to_native(ref.state_dict()))
        text = model.config.text
        return (
            ref,
            model.eval(),
            siglip.REDUCED[name][1]["size"],
            siglip._tokens(text.context_length, text.vocab_size),
        )
    ref, config = eva._tiny_reference("eva02-rope-rescaled")
    tokens = sample_tokens(eva.TEXT["context_length"], eva.TEXT["vocab_size"])
    return ref, eva._native(ref, config), config.vision.image_size, tokens


FAMILIES = ["vit", "resnet", "siglip", "siglip2", "eva02"]


def _assert_same(expected: dict, actual: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for key, want in expected.items():
        got = actual[key]
        if isinstance(want, list):
            assert len(got) == len(want), key
            for i, (g, w) in enumerate(zip(got, want, strict=True)):
                assert g.shape == w.shape, (key, i)
                assert max_diff(g, w) <= TOL, (key, i, max_diff(g, w))
        else:
            assert got.shape == want.shape, key
            assert max_diff(got, want) <= TOL, (key, max_diff(got, want))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("family", FAMILIES)
def test_forward_intermediates_matches_open_clip(family, case):
    ref, model, size, tokens = _pair(family)
    kwargs = dict(CASES[case])
    if family == "resnet" and kwargs.get("image_output_fmt") == "NLC":
        kwargs["image_output_fmt"] = "NCHW"  # open_clip's ResNet only writes NCHW
    images = sample_images(size)
    if case.endswith("-image"):
        tokens = None
    with torch.no_grad():
        actual = model.forward_intermediates(image=images, text=tokens, **kwargs)
        if family == "resnet" and case == "list-nchw-extra":
            # open_clip 3.x truncates a ResNet *without* stop_early and then fails to pool
            # layer3's map: its intermediates, and the features of a full pass
            expected = ref.forward_intermediates(image=images, text=tokens, **kwargs,
                                                 intermediates_only=True)  # fmt: skip
            full = ref.forward_intermediates(image=images, text=tokens)
            expected.update(image_features=full["image_features"],
                            text_features=full["text_features"])  # fmt: skip
        else:
            expected = ref.forward_intermediates(image=images, text=tokens, **kwargs)
    _assert_same(expected, actual)
    assert actual["image_intermediates"] and (tokens is None or actual["text_intermediates"])


@pytest.mark.parametrize("family", FAMILIES)
def test_last_block_features_equal_the_encoders(family):
    """Without ``stop_early`` the features are ``encode_image``/``encode_text``'s (one pass)."""
    _, model, size, tokens = _pair(family)
    images = sample_images(size)
    with torch.no_grad():
        out = model.forward_intermediates(image=images, text=tokens, image_indices=1)
        assert max_diff(out["image_features"], model.encode_image(images, True)) <= TOL
        assert max_diff(out["text_features"], model.encode_text(tokens, True)) <= TOL


def _count_blocks(blocks) -> tuple[list[int], list]:
    calls: list[int] = []
    handles = [b.register_forward_hook(lambda *_: calls.append(1)) for b in blocks]
    return calls, handles


@pytest.mark.parametrize("family", FAMILIES)
def test_stop_early_runs_fewer_blocks(family):
    _, model, size, tokens = _pair(family)
    vision = model.visual
    stages = list(vision.stages) if family == "resnet" else list(vision.blocks)
    counts = {}
    for stop in (False, True):
        calls, handles = _count_blocks([*stages, *model.text.blocks])
        with torch.no_grad():
            model.forward_intermediates(
                image=sample_images(size), text=tokens, image_indices=[0], text_indices=[0],
                stop_early=stop, intermediates_only=True,
            )  # fmt: skip
        for h in handles:
            h.remove()
        counts[stop] = len(calls)
    full = len(stages) + len(model.text.blocks)
    assert counts[False] == full
    # the first block (ResNet: the stem, not counted, then no stage) of each tower only
    assert counts[True] == (0 if family == "resnet" else 1) + 1


def test_take_indices_semantics_and_errors():
    assert take_indices(12, None) == (list(range(12)), 11)
    assert take_indices(12, 2) == ([10, 11], 11)
    assert take_indices(12, [-2, 3]) == ([10, 3], 10)
    for bad in (0, 13, [12], [-13], []):
        with pytest.raises(ValueError):
            take_indices(12, bad)


def test_bad_output_format_and_missing_inputs_are_refused():
    _, model, size, tokens = _pair("vit")
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(image=sample_images(size), image_output_fmt="NHWC")
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(text=tokens, text_output_fmt="NCHW")
    with pytest.raises(ValueError, match="both"):
        model.forward_intermediates(text=tokens, output_logits=True)
