"""``embed --engine ray --precision int8``: the driver measures the int8 copy once on
``calibration``, refuses it (``max_degradation``) or warns exactly as the local path does,
before Ray starts; the encoders run that same int8 copy with its report."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from PIL import Image
from typer.testing import CliRunner

import clipforge
import clipforge.quantization as quantization
from clipforge.cli import app
from clipforge.data.folder import list_images
from clipforge.distributed import MANIFEST, embed
from clipforge.distributed.ray_embed import _Encoder, _probe
from clipforge.quantization import QuantizationError, QuantizationWarning, apply_precision
from tests.distributed.test_ray_embed import (  # noqa: F401  (fixtures)
    N_GOOD,
    assert_matches,
    folder,
    local_ray,
    model_dir,
    read_output,
)


@pytest.fixture()
def calibration(tmp_path) -> Path:
    """Four photos and two prompts of one's own, not the built-in set."""
    root = tmp_path / "calib"
    root.mkdir()
    rng = np.random.default_rng(5)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / f"{i}.png")
    (root / "prompts.txt").write_text("a red bicycle\na cat asleep on a sofa\n", encoding="utf-8")
    return root


def _local_refusal(model_dir: Path, calibration: Path) -> str:  # noqa: F811
    with pytest.raises(QuantizationError) as err:
        apply_precision(clipforge.load(model_dir), "int8", calibration=calibration,
                        max_degradation=0.0)  # fmt: skip
    return str(err.value)


def test_max_degradation_refuses_before_ray_starts(model_dir, calibration, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    with pytest.raises(QuantizationError) as err:
        embed(calibration, out, model=model_dir, precision="int8", calibration=calibration,
              max_degradation=0.0)  # fmt: skip
    assert str(err.value) == _local_refusal(model_dir, calibration)  # names the calibration set
    assert f"on {calibration}: 4 images, 2 prompts" in str(err.value)
    assert not ray.is_initialized() and not list(out.glob("shard-*"))


def test_cli_engine_ray_int8_refuses_in_one_line(model_dir, calibration, tmp_path):  # noqa: F811
    args = ["embed", str(calibration), "--engine", "ray", "-o", str(tmp_path / "out"),
            "-m", str(model_dir), "--precision", "int8", "--calibration", str(calibration),
            "--max-degradation", "0"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "exceeds --max-degradation 0.0" in errors[0]
    assert not ray.is_initialized()


def test_the_driver_warns_as_the_local_path_does(model_dir, calibration, monkeypatch):  # noqa: F811
    """A stricter tolerance makes both paths warn: the same warning, from the driver."""
    check = quantization.check_report
    monkeypatch.setattr(quantization, "check_report",
                        lambda report, max_degradation, warn_below: check(
                            report, max_degradation, 0.99999999))  # fmt: skip

    def caught(run) -> list[str]:
        with warnings.catch_warnings(record=True) as found:
            warnings.simplefilter("always")
            run()
        return [str(w.message) for w in found if issubclass(w.category, QuantizationWarning)]

    local = caught(lambda: apply_precision(clipforge.load(model_dir), "int8",
                                           calibration=calibration))  # fmt: skip
    driver = caught(lambda: _probe(model_dir, None, "int8", "cpu", calibration, None))
    assert len(local) == 1 and driver == local


def test_an_encoder_runs_the_measured_int8_copy(model_dir, calibration):  # noqa: F811
    probe = _probe(model_dir, None, "int8", "cpu", calibration, 0.05)
    assert probe.precision == "int8" and probe.quantization is not None
    local = apply_precision(clipforge.load(model_dir), "int8", calibration=calibration)
    assert probe.quantization == local.quantization_report
    encoder = _Encoder(str(model_dir), None, "cpu", probe.precision, True, threads=1,
                       quantization=probe.quantization)  # fmt: skip
    assert encoder.model.quantization_report is probe.quantization
    pixels = torch.rand(3, *probe.shape, generator=torch.Generator().manual_seed(0))
    batch = {"pixels": pixels.numpy(), "error": np.asarray(["", "", ""], dtype=object)}
    got = torch.from_numpy(encoder(batch)["embedding"])
    want = clipforge.embed_images(local, list(pixels), batch_size=3).embeddings
    fp32 = clipforge.embed_images(clipforge.load(model_dir), list(pixels), batch_size=3).embeddings
    assert torch.equal(got, torch.as_tensor(want))  # the int8 model, not fp32 ...
    assert not torch.equal(got, torch.as_tensor(fp32))  # ... which differs


@pytest.mark.slow  # a local Ray instance: engine end to end
def test_ray_int8_run_equals_the_local_int8_path(local_ray, model_dir, folder, calibration,  # noqa: F811
                                                  tmp_path):  # fmt: skip
    out = tmp_path / "out"
    report = embed(folder, out, model=model_dir, shard_size=4, batch_size=1, precision="int8",
                   calibration=calibration, max_degradation=0.05)  # fmt: skip
    local = apply_precision(clipforge.load(model_dir), "int8", calibration=calibration)
    assert report.n_embedded == N_GOOD and report.quantization == local.quantization_report
    reference = clipforge.embed_images(local, list_images(folder), batch_size=1)
    assert_matches(read_output(out), dict(zip(reference.paths, reference.embeddings, strict=True)))
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["precision"] == "int8"
    assert manifest["quantization"] == local.quantization_report.to_dict()
    with pytest.raises(ValueError, match="precision"):  # no float shards mixed into it
        embed(folder, out, model=model_dir, shard_size=4)
