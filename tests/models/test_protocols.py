"""CLIP satisfies the ClipModel protocol: statically (pyright checks the assignment in
``_static_check``, run by scripts/test.sh) and at runtime (``isinstance``)."""

from clipforge.models import CLIP, ClipModel, Tower

from ..conftest import tiny_vit_config


def _static_check() -> ClipModel:
    _: ClipModel = CLIP(tiny_vit_config())  # pyright reports it if CLIP stops matching
    return _


def test_clip_is_a_clip_model():
    model = _static_check()
    assert isinstance(model, ClipModel)
    assert isinstance(model.tower("image"), Tower) and isinstance(model.tower("text"), Tower)


def test_other_modules_are_not_clip_models():
    import torch

    assert not isinstance(torch.nn.Linear(2, 2), ClipModel)
    assert not isinstance(CLIP(tiny_vit_config()).tower("image"), ClipModel)
