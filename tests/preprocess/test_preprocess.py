"""Image preprocessing matches open_clip's image_transform and transformers' PIL CLIP
image processor (max abs diff <= 1e-6; in practice bit-identical), and decoding is strict.

transformers 5.x: ``CLIPImageProcessor`` is the torchvision backend (the old "Fast" one);
the PIL-based processor we reproduce is ``CLIPImageProcessorPil`` (``CLIPImageProcessor``
in 4.x).
"""

from __future__ import annotations

import io
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.transform import MaybeConvertMode, MaybeToTensor
from PIL import Image, ImageFile
from torchvision import transforms as T

from clipforge.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    OPENAI_MEAN,
    OPENAI_STD,
    ImageDecodeError,
    PreprocessConfig,
    build_preprocess,
    load_image,
)
from clipforge.preprocess.transforms import _pass_order, resize_crop

try:  # transformers >= 5: the PIL backend has its own class
    from transformers import CLIPImageProcessorPil as HFProcessor
except ImportError:  # transformers 4.x: CLIPImageProcessor is the PIL-based one
    from transformers import CLIPImageProcessor as HFProcessor

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
PHOTOS = SHARED / "data" / "photos"
FLICKR = SHARED / "data" / "flickr8k-1k.tar.gz"
TOL = 1e-6
Transform = Callable[[Image.Image], torch.Tensor]


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"required test data is missing: {path} (expected ../shared beside the repo)")
    return path


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """torch intra-op threads on a busy 2-core box make the *reference* very slow."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    files = sorted(p for p in _require(PHOTOS).iterdir() if p.suffix in (".png", ".jpg"))
    assert len(files) == 8, f"expected 8 photos in {PHOTOS}, found {len(files)}"
    return {p.name: load_image(p) for p in files}


@pytest.fixture(scope="module")
def flickr() -> list[Image.Image]:
    """Every 10th of the 1000 flickr8k JPEGs (100 images), decoded from memory."""
    images = []
    with tarfile.open(_require(FLICKR)) as tar:  # one pass: seeking back in a .gz re-inflates
        files = {
            m.name: tar.extractfile(m).read()
            for m in tar
            if m.isfile() and m.name.startswith("flickr8k-1k/images/")
        }
    for name in sorted(files)[::10]:
        image = Image.open(io.BytesIO(files[name]))
        image.load()
        images.append(image)
    assert len(images) == 100
    return images


# ----------------------------------------------------------------------------- references


def openai_reference(cfg: PreprocessConfig) -> Transform:
    """open_clip's eval transform (torchvision composed by hand for "nearest")."""
    if cfg.interpolation != "nearest":
        return open_clip.image_transform(
            cfg.image_size, is_train=False, mean=cfg.mean, std=cfg.std,
            resize_mode=cfg.resize_mode, interpolation=cfg.interpolation,
            fill_color=cfg.fill_color,
        )  # fmt: skip
    assert cfg.resize_mode == "shortest"
    return T.Compose([
        T.Resize(cfg.image_size, interpolation=T.InterpolationMode.NEAREST),
        T.CenterCrop(cfg.image_size), MaybeConvertMode(), MaybeToTensor(),
        T.Normalize(cfg.mean, cfg.std),
    ])  # fmt: skip


def hf_reference(cfg: PreprocessConfig) -> Transform:
    s = cfg.image_size
    size = {"height": s, "width": s} if cfg.resize_mode == "squash" else {"shortest_edge": s}
    resample = {"bicubic": 3, "bilinear": 2, "nearest": 0}[cfg.interpolation]
    processor = HFProcessor(
        size=size, crop_size={"height": s, "width": s}, resample=resample,
        image_mean=list(cfg.mean), image_std=list(cfg.std),
    )  # fmt: skip
    return lambda image: processor(images=image, return_tensors="pt")["pixel_values"][0]


def reference(cfg: PreprocessConfig) -> Transform:
    return hf_reference(cfg) if cfg.pipeline == "hf" else openai_reference(cfg)


def assert_parity(cfg: PreprocessConfig, images: dict[str, Image.Image]) -> None:
    ours, ref = build_preprocess(cfg), reference(cfg)
    for name, image in images.items():
        expected, got = ref(image), ours(image)
        assert got.dtype == torch.float32 and got.shape == (3, cfg.image_size, cfg.image_size)
        assert got.shape == expected.shape, name
        diff = (got - expected.float()).abs().max().item()
        assert diff <= TOL, f"{name} ({image.mode} {image.size}) {cfg}: max abs diff {diff}"


# -------------------------------------------------------------------------- real photos


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("resize_mode", ["shortest", "squash", "longest"])
@pytest.mark.parametrize("size", [224, 336])
def test_photos_openai(photos, size, resize_mode, interpolation):
    cfg = PreprocessConfig(image_size=size, resize_mode=resize_mode, interpolation=interpolation)
    assert_parity(cfg, photos)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [224, 336])
def test_photos_hf(photos, size, interpolation):
    assert_parity(
        PreprocessConfig(image_size=size, interpolation=interpolation, pipeline="hf"), photos
    )


def test_photos_bit_exact(photos):
    for pipeline in ("openai", "hf"):
        cfg = PreprocessConfig(pipeline=pipeline)
        ours, ref = build_preprocess(cfg), reference(cfg)
        for name, image in photos.items():
            assert torch.equal(ours(image), ref(image).float()), (pipeline, name)


@pytest.mark.parametrize(
    "cfg",
    [
        PreprocessConfig(),
        PreprocessConfig(image_size=336, interpolation="bilinear"),
        PreprocessConfig(resize_mode="longest", fill_color=7),
        PreprocessConfig(pipeline="hf"),
        PreprocessConfig(image_size=336, pipeline="hf", mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ],
    ids=["openai", "openai-336-bilinear", "openai-longest", "hf", "hf-336-imagenet"],
)
def test_flickr_sample(flickr, cfg):
    assert_parity(cfg, {f"flickr[{i}]": image for i, image in enumerate(flickr)})


# ---------------------------------------------------------------------- synthetic inputs


def _rgb(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _synthetic() -> dict[str, Image.Image]:
    rng = np.random.default_rng(1)
    base = _rgb(160, 120)
    gray = Image.fromarray(np.tile(np.arange(200, dtype=np.uint8), (90, 1)))
    rgba = base.copy()
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (120, 160), dtype=np.uint8)))
    palette = base.quantize(colors=64)
    palette_t = palette.copy()
    palette_t.info["transparency"] = 3
    return {
        "rgb-1x1": _rgb(1, 1),
        "rgb-3000x9": _rgb(3000, 9),
        "rgb-9x3000": _rgb(9, 3000),
        "rgb-100x50-smaller-than-crop": _rgb(100, 50),
        "rgb-224x224": _rgb(224, 224),
        "rgb-337x500": _rgb(337, 500),
        "rgb-240x600-pillow-resizes-vertically-first": _rgb(240, 600),
        "L": gray,
        "1": gray.convert("1"),
        "RGBA": rgba,
        "LA": rgba.convert("LA"),
        "P": palette,
        "P-transparency": palette_t,
        "CMYK": base.convert("CMYK"),
        "I-8bit-values": gray.convert("I"),
    }


SYNTHETIC = _synthetic()
CHEAP = {k: v for k, v in SYNTHETIC.items() if k not in ("rgb-3000x9", "rgb-9x3000")}


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("resize_mode", ["shortest", "squash", "longest"])
@pytest.mark.parametrize("size", [224, 336])
def test_synthetic_openai(size, resize_mode, interpolation):
    # The 3000x9 strips take the reference ~0.25 s each: only at the default settings.
    default = (size, resize_mode, interpolation) == (224, "shortest", "bicubic")
    images = SYNTHETIC if default or resize_mode != "shortest" else CHEAP
    cfg = PreprocessConfig(image_size=size, resize_mode=resize_mode, interpolation=interpolation)
    assert_parity(cfg, images)


@pytest.mark.parametrize("resize_mode", ["shortest", "squash"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_synthetic_hf(interpolation, resize_mode):
    cfg = PreprocessConfig(interpolation=interpolation, resize_mode=resize_mode, pipeline="hf")
    images = SYNTHETIC if (interpolation, resize_mode) == ("bicubic", "shortest") else CHEAP
    assert_parity(cfg, images)


@pytest.mark.parametrize("pipeline", ["openai", "hf"])
def test_nearest(pipeline):
    assert_parity(PreprocessConfig(interpolation="nearest", pipeline=pipeline), CHEAP)


@pytest.mark.parametrize("fill", [0, 128, 255])
def test_longest_fill_color(fill):
    cfg = PreprocessConfig(resize_mode="longest", fill_color=fill, image_size=336)
    assert_parity(cfg, CHEAP)


@pytest.mark.parametrize(
    ("mean", "std"), [(IMAGENET_MEAN, IMAGENET_STD), (INCEPTION_MEAN, INCEPTION_STD)]
)
@pytest.mark.parametrize("pipeline", ["openai", "hf"])
def test_every_pixel_level_and_other_stats(pipeline, mean, std):
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = np.stack([levels, levels.T, 255 - levels], axis=-1).repeat(14, 0).repeat(14, 1)
    images = {"all-levels": Image.fromarray(rgb), "all-levels-L": Image.fromarray(levels)}
    assert_parity(PreprocessConfig(mean=mean, std=std, pipeline=pipeline), images)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
@pytest.mark.parametrize("pipeline", ["openai", "hf"])
def test_16bit_is_scaled_not_saturated(mode, pipeline):
    ramp = np.linspace(0, 65535, 300).astype(np.uint16)
    values = np.tile(ramp, (200, 1))
    if mode == "I":
        image = Image.fromarray(values.astype(np.int32))
    elif mode == "I;16B":
        image = Image.frombytes(mode, (300, 200), values.astype(">u2").tobytes())
    else:
        image = Image.fromarray(values)
    assert image.mode == mode
    cfg = PreprocessConfig(pipeline=pipeline)
    out = build_preprocess(cfg)(image)
    white = (1.0 - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    assert not torch.allclose(out, white.view(3, 1, 1).expand_as(out)), "16-bit saturated"
    assert out.amax() - out.amin() > 2.0  # the (cropped) gradient survives
    eight_bit = Image.fromarray((values >> 8).astype(np.uint8))
    expected = reference(cfg)(eight_bit).float()
    assert (out - expected).abs().max().item() <= TOL


def test_resize_crop_matches_pil_on_random_geometry():
    """The pass-splitting resize equals PIL's resize + crop for random sizes and boxes."""
    assert _pass_order() is not None, "unknown Pillow resampling pass order: fast path off"
    rng = np.random.default_rng(5)
    for i in range(300):
        w, h, nw, nh = (int(v) for v in rng.integers(1, 160, 4))
        if i % 3 == 0:  # near Pillow's vertical-first boundary
            nh = max(1, h - 2 * (w - nw) + int(rng.integers(-2, 3)))
        left, top = int(rng.integers(0, nw)), int(rng.integers(0, nh))
        box = (left, top, int(rng.integers(left + 1, nw + 1)), int(rng.integers(top + 1, nh + 1)))
        image = _rgb(w, h, seed=i).convert(("RGB", "L", "RGBA", "LA")[i % 4])
        if image.mode in ("RGBA", "LA"):
            image.putalpha(_rgb(w, h, seed=1000 + i).convert("L"))
        resample = (Image.Resampling.BICUBIC, Image.Resampling.BILINEAR)[i % 8 // 4]
        expected = np.asarray(image.resize((nw, nh), resample).crop(box))
        got = np.asarray(resize_crop(image, (nw, nh), box, resample))
        assert np.array_equal(got, expected), (image.mode, (w, h), (nw, nh), box, resample)


# -------------------------------------------------------------------- API and behaviour


def test_path_input_and_pickle(photos, tmp_path):
    path = PHOTOS / "rocket.jpg"
    transform = build_preprocess(PreprocessConfig(image_size=64))
    from_path = transform(path)
    assert torch.equal(from_path, transform(str(path)))
    assert torch.equal(from_path, transform(photos["rocket.jpg"]))
    clone = pickle.loads(pickle.dumps(transform))
    assert torch.equal(clone(path), from_path)
    assert "image_size=64" in repr(clone)
    with pytest.raises(TypeError):
        transform(np.zeros((4, 4, 3), np.uint8))


class _Files(torch.utils.data.Dataset):
    def __init__(self, transform: Transform) -> None:
        self.files = sorted(PHOTOS.iterdir())
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.files[i])


def test_dataloader_worker(photos):
    transform = build_preprocess(PreprocessConfig(image_size=32))
    loader = torch.utils.data.DataLoader(_Files(transform), batch_size=4, num_workers=1)
    batches = list(loader)
    assert [tuple(b.shape) for b in batches] == [(4, 3, 32, 32)] * 2
    assert torch.equal(batches[1][3], transform(photos["rocket.jpg"]))


def test_batch_threads_equal_single_calls(photos, tmp_path):
    transform = build_preprocess(PreprocessConfig(image_size=64))
    files = sorted(PHOTOS.iterdir())
    inputs = [*files, *photos.values()]
    expected = torch.stack([transform(x) for x in inputs])
    for threads in (None, 1, 3):
        assert torch.equal(transform.batch(inputs, num_threads=threads), expected)
    assert transform.batch([]).shape == (0, 3, 64, 64)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        transform.batch([files[0], broken, files[1]], num_threads=2)


def test_draft_is_close(photos):
    """Deviation bounds measured and documented in ``Preprocess``'s docstring."""
    exact, draft = (
        build_preprocess(PreprocessConfig()),
        build_preprocess(PreprocessConfig(draft=True)),
    )
    hubble = photos["hubble_deep_field.jpg"]  # 1000 x 872 JPEG: DCT-scaled by 2
    diff = (draft(PHOTOS / "hubble_deep_field.jpg") - exact(hubble)).abs().max().item()
    assert 0.0 < diff <= 0.15
    for name, image in photos.items():  # none has a side >= 3 * 224: no box-reduce
        assert torch.equal(draft(image), exact(image)), name
    exact, draft = (
        build_preprocess(PreprocessConfig(image_size=128, draft=d)) for d in (False, True)
    )
    diff = (draft(hubble) - exact(hubble)).abs().max().item()  # box-reduced by 2
    assert 0.0 < diff <= 0.05


def test_config_round_trip_and_validation():
    cfg = PreprocessConfig(image_size=336, interpolation="bilinear", resize_mode="squash")
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["mean"] == list(OPENAI_MEAN) and cfg.to_dict()["std"] == list(OPENAI_STD)
    oc = {"size": [256, 256], "mode": "RGB", "mean": [0.5] * 3, "std": 0.5,
          "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}  # fmt: skip
    assert PreprocessConfig.from_dict(oc) == PreprocessConfig(
        image_size=256, mean=INCEPTION_MEAN, std=INCEPTION_STD
    )
    bad = [
        ({"interpolation": "lanczos"}, "interpolation"),
        ({"resize_mode": "crop"}, "resize_mode"),
        ({"pipeline": "timm"}, "pipeline"),
        ({"image_size": 0}, "image_size"),
        ({"mean": (0.5, 0.5)}, "mean"),
        ({"std": (0.5, 0.0, 0.5)}, "std"),
        ({"fill_color": 300}, "fill_color"),
        ({"pipeline": "hf", "resize_mode": "longest"}, "longest"),
        ({"colour": 1}, "colour"),
    ]
    for kwargs, word in bad:
        with pytest.raises(ValueError, match=word):
            PreprocessConfig.from_dict(kwargs)


# ------------------------------------------------------------------------- image decoding


def _assert_decode_error(path: Path) -> None:
    with pytest.raises(ImageDecodeError) as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError) and info.value.path == str(path)
    clone = pickle.loads(pickle.dumps(info.value))
    assert str(clone) == str(info.value)


def test_load_image_errors(tmp_path, monkeypatch):
    jpeg = (PHOTOS / "rocket.jpg").read_bytes()
    png = (PHOTOS / "coins.png").read_bytes()
    files = {
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "empty.jpg": b"",
        "notes.txt": b"this is not an image\n" * 10,
        "corrupt.png": png[:100] + bytes(b ^ 0x5A for b in png[100:400]) + png[400:],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        _assert_decode_error(tmp_path / name)
    _assert_decode_error(tmp_path / "does-not-exist.jpg")
    _assert_decode_error(tmp_path)  # a directory
    # Truncation is never silently accepted, even if some library flipped the global.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    _assert_decode_error(tmp_path / "truncated.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_load_image_decompression_bomb(monkeypatch):
    path = PHOTOS / "rocket.jpg"  # 640 x 427
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # warning range -> error
    _assert_decode_error(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # PIL's own error range
    _assert_decode_error(path)


def test_load_image_decodes_fully():
    image = load_image(PHOTOS / "rocket.jpg")
    assert image.size == (640, 427) and image.mode == "RGB"
    assert image.im is not None and not image.tile  # pixels decoded, nothing pending
