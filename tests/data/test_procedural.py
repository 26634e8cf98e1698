"""Procedural image-caption dataset: determinism, captions, held-out split, pixels, loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from clipforge.data import (
    CLASSNAMES,
    COLOURS,
    HELD_OUT_PAIRS,
    SHAPES,
    TRAIN_PAIRS,
    ObjectSpec,
    ProceduralCaptions,
    SceneSpec,
    caption_scene,
    render_scene,
    render_zero_shot,
    zero_shot_task,
)
from clipforge.data.procedural import _NUMBERS, _plural


def colour_mask(image, colour: str, tol: int = 12) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.int16)
    return (np.abs(pixels - np.array(COLOURS[colour], dtype=np.int16)) <= tol).all(axis=-1)


def test_same_index_is_identical_across_instances():
    a, b = ProceduralCaptions(16, seed=7), ProceduralCaptions(16, seed=7)
    for i in (0, 5, 15):
        (img_a, cap_a), (img_b, cap_b) = a[i], b[i]
        assert torch.equal(img_a, img_b) and cap_a == cap_b
    # item i does not depend on the dataset length or on access order
    c = ProceduralCaptions(100, seed=7)
    assert torch.equal(c[5][0], a[5][0]) and c[5][1] == a[5][1]
    assert c[-95][1] == a[5][1]
    with pytest.raises(IndexError):
        a[16]


def test_different_seeds_and_splits_differ():
    a, b = ProceduralCaptions(8, seed=0), ProceduralCaptions(8, seed=1)
    assert [a[i][1] for i in range(8)] != [b[i][1] for i in range(8)]
    assert not all(torch.equal(a[i][0], b[i][0]) for i in range(8))
    val = ProceduralCaptions(8, seed=0, split="val")
    assert [a[i][1] for i in range(8)] != [val[i][1] for i in range(8)]


@pytest.mark.parametrize("image_size", [32, 64, 96])
def test_images_are_rgb_of_requested_size(image_size):
    ds = ProceduralCaptions(4, image_size=image_size, seed=2)
    spec, pil = ds.render(0)
    assert pil.mode == "RGB" and pil.size == (image_size, image_size)
    image, caption = ds[1]
    assert image.shape == (3, image_size, image_size) and image.dtype == torch.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert isinstance(caption, str)
    seen = ProceduralCaptions(2, image_size=image_size, transform=lambda im: im.size)[0][0]
    assert seen == (image_size, image_size)


def test_caption_examples():
    two_left = SceneSpec(
        [ObjectSpec("circle", "red", "small", 2), ObjectSpec("square", "blue", "large")],
        relation="left of",
    )
    assert caption_scene(two_left) == "two small red circles left of a large blue square"
    assert caption_scene(SceneSpec([ObjectSpec("triangle", "green")])) == "a green triangle"
    assert caption_scene(SceneSpec([ObjectSpec("star", "yellow", count=3)])) == "three yellow stars"
    assert (
        caption_scene(SceneSpec([ObjectSpec("cross", "orange", count=2)])) == "two orange crosses"
    )
    assert caption_scene(SceneSpec([ObjectSpec("circle", "orange")])) == "an orange circle"
    both = SceneSpec([ObjectSpec("circle", "red"), ObjectSpec("square", "blue", "small")])
    assert caption_scene(both) == "a red circle and a small blue square"
    with pytest.raises(ValueError):
        SceneSpec([ObjectSpec("circle", "red")], relation="above")
    with pytest.raises(ValueError):
        ObjectSpec("hexagon", "red")


def test_captions_match_specs():
    ds = ProceduralCaptions(120, seed=3)
    kinds = set()
    for i in range(len(ds)):
        spec = ds.spec(i)
        caption = caption_scene(spec)
        words = caption.split()
        for obj in spec.objects:
            assert obj.colour in words
            assert (obj.shape if obj.count == 1 else _plural(obj.shape)) in words
            if obj.count > 1:
                assert _NUMBERS[obj.count] in words
            if obj.size is not None:
                assert obj.size in words
        if spec.relation is not None:
            assert f" {spec.relation} " in caption
        kinds.add(
            (len(spec.objects), spec.relation is not None, max(o.count for o in spec.objects))
        )
    # "mixed" covers single objects, counting, binding (2 groups) and spatial relations
    assert any(k[0] == 1 and k[2] == 1 for k in kinds)
    assert any(k[0] == 1 and k[2] > 1 for k in kinds)
    assert any(k[0] == 2 and not k[1] for k in kinds)
    assert any(k[1] for k in kinds)


def test_held_out_combinations():
    assert len(HELD_OUT_PAIRS) == len(COLOURS)
    # every colour and every shape is still seen in training
    assert {c for c, _ in TRAIN_PAIRS} == set(COLOURS) and {s for _, s in TRAIN_PAIRS} == set(
        SHAPES
    )
    train = ProceduralCaptions(400, seed=0, split="train")
    val = ProceduralCaptions(100, seed=0, split="val")
    for ds in (train, val):
        assert all(not (ds.spec(i).pairs & HELD_OUT_PAIRS) for i in range(len(ds)))
    test = ProceduralCaptions(200, seed=0, split="test")
    seen = set()
    for i in range(len(test)):
        held = test.spec(i).pairs & HELD_OUT_PAIRS
        assert held, "every test scene contains a held-out pair"
        seen |= held
    assert seen == HELD_OUT_PAIRS


@pytest.mark.parametrize("colour", list(COLOURS))
def test_rendered_colours_are_present(colour):
    spec = SceneSpec([ObjectSpec("square", colour, "large")])
    image = render_scene(spec, 64, np.random.default_rng(0))
    side = 0.3 * 64 * 0.9 * 0.9  # smallest size after jitter and a possible refit
    assert colour_mask(image, colour, tol=0).sum() >= side * side * 0.9
    for other in COLOURS:
        if other != colour:
            assert colour_mask(image, other).sum() == 0


def test_dataset_pixels_contain_every_object_colour():
    ds = ProceduralCaptions(40, seed=5, difficulty="hard")
    for i in range(len(ds)):
        spec, image = ds.render(i)
        for obj in spec.objects:
            assert colour_mask(image, obj.colour).sum() >= 8 * obj.count, (i, spec)


@pytest.mark.parametrize(
    "relation,axis,sign",
    [("left of", 1, -1), ("right of", 1, 1), ("above", 0, -1), ("below", 0, 1)],
)
def test_spatial_relation_is_rendered(relation, axis, sign):
    spec = SceneSpec(
        [ObjectSpec("circle", "red", "small", 2), ObjectSpec("square", "blue", "large")], relation
    )
    for seed in range(5):
        image = render_scene(spec, 64, seed)
        red = np.nonzero(colour_mask(image, "red"))[axis]
        blue = np.nonzero(colour_mask(image, "blue"))[axis]
        if sign < 0:  # every red pixel lies strictly before every blue one
            assert red.max() < blue.min()
        else:
            assert red.min() > blue.max()


def test_counts_are_rendered_as_separate_objects():
    for n in range(1, 6):
        spec = SceneSpec([ObjectSpec("square", "green", "small", n)])
        mask = colour_mask(render_scene(spec, 64, n), "green")
        # objects never touch: count connected components with a tiny flood fill
        seen = np.zeros_like(mask)
        components = 0
        for y, x in zip(*np.nonzero(mask), strict=True):
            if seen[y, x]:
                continue
            components += 1
            stack = [(y, x)]
            while stack:
                cy, cx = stack.pop()
                if 0 <= cy < 64 and 0 <= cx < 64 and mask[cy, cx] and not seen[cy, cx]:
                    seen[cy, cx] = True
                    stack += [(cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)]
        assert components == n


def test_dataloader_workers_match_single_process():
    ds = ProceduralCaptions(8, image_size=32, seed=11)
    serial = list(DataLoader(ds, batch_size=4, num_workers=0))
    parallel = list(DataLoader(ds, batch_size=4, num_workers=2))
    for (img_s, cap_s), (img_p, cap_p) in zip(serial, parallel, strict=True):
        assert torch.equal(img_s, img_p)
        assert cap_s == cap_p


def test_tokenizer_path_returns_1d_long():
    from clipforge.tokenizer import tokenize

    ds = ProceduralCaptions(4, seed=1, tokenizer=tokenize)
    _, ids = ds[0]
    assert ids.dtype == torch.long and ids.shape == (77,)
    assert torch.equal(ids, tokenize(ProceduralCaptions(4, seed=1)[0][1])[0])
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch[1].shape == (4, 77)
    one_d = ProceduralCaptions(2, tokenizer=lambda s: torch.arange(len(s)))
    assert one_d[0][1].ndim == 1 and one_d[0][1].dtype == torch.long


def test_zero_shot_task():
    classnames, samples = zero_shot_task("test", n_per_class=3)
    assert classnames == list(CLASSNAMES) == ProceduralCaptions.classnames()
    assert len(samples) == 3 * len(HELD_OUT_PAIRS)
    for spec, label in samples:
        (obj,) = spec.objects
        assert (obj.colour, obj.shape) in HELD_OUT_PAIRS
        assert classnames[label] == f"{obj.colour} {obj.shape}"
    _, train_samples = zero_shot_task("train", n_per_class=1)
    assert {classnames[label] for _, label in train_samples} == {f"{c} {s}" for c, s in TRAIN_PAIRS}
    assert zero_shot_task("test") == zero_shot_task("test")
    prompts = ProceduralCaptions.class_prompts()
    assert prompts[0] == f"a photo of a {classnames[0]}." and len(prompts) == len(classnames)
    rendered = render_zero_shot(samples[:4], image_size=48, seed=0)
    again = render_zero_shot(samples[:4], image_size=48, seed=0)
    for (img, label), (img2, label2), (spec, want) in zip(rendered, again, samples, strict=False):
        assert label == label2 == want and img.size == (48, 48)
        assert np.array_equal(np.asarray(img), np.asarray(img2))
        assert colour_mask(img, spec.objects[0].colour).sum() > 10
