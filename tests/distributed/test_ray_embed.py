"""``clipforge.distributed.embed`` on a local Ray instance (2 CPUs): equality with
``embed_images``, per-item failures, resume after an interruption, a killed worker."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import torch
from PIL import Image

import clipforge
from clipforge.data.folder import list_images
from clipforge.distributed import MANIFEST, embed
from clipforge.distributed.ray_embed import free_ray_garbage

TINY = {
    "embed_dim": 16,
    "vision": {"type": "vit", "image_size": 32, "patch_size": 8, "width": 32, "layers": 2,
               "heads": 2},
    "text": {"context_length": 16, "width": 32, "heads": 2, "layers": 1},
}  # fmt: skip
N_GOOD = 10


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    free_ray_garbage()  # see its docstring: a forked test process must not inherit it
    try:
        yield
    finally:
        ray.shutdown()
        free_ray_garbage()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny"
    clipforge.save(clipforge.create_model(clipforge.ClipConfig.from_dict(TINY)), path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Ten good images of varied sizes in two sub-folders, and one corrupt file."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(N_GOOD):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        pixels = rng.integers(0, 255, (20 + 3 * i, 30 + i, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"img{i:02d}.png")
    (root / "a" / "broken.jpg").write_bytes(b"not a jpeg at all")
    return root


def read_output(out: Path) -> dict[str, np.ndarray]:
    """path -> embedding over every shard (asserting each path appears once)."""
    found: dict[str, np.ndarray] = {}
    for shard in sorted(out.glob("shard-*.parquet")):
        table = pq.read_table(shard).to_pydict()
        assert set(table) == {"id", "path", "path_bytes", "embedding", "model"}
        for path, vector in zip(table["path"], table["embedding"], strict=True):
            assert path not in found, f"{path} written twice"
            found[path] = np.asarray(vector, dtype=np.float32)
    return found


def reference(model_dir: Path, folder: Path) -> dict[str, np.ndarray]:
    result = clipforge.embed_images(clipforge.load(model_dir), list_images(folder))
    assert len(result.failures) == 1 and len(result.paths) == N_GOOD
    return dict(zip(result.paths, result.embeddings, strict=True))


def assert_matches(found: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(found) == sorted(expected)
    worst = max(np.abs(found[p] - expected[p]).max() for p in expected)
    assert worst <= 1e-6, worst


@pytest.mark.slow  # a local Ray instance: engine end to end
def test_folder_to_parquet_equals_embed_images(local_ray, model_dir, folder, tmp_path):
    out = tmp_path / "out"
    report = embed(folder, out, model=model_dir, shard_size=4, batch_size=3)
    assert report.written == [f"shard-{k:05d}.parquet" for k in range(3)] and not report.skipped
    assert report.n_embedded == N_GOOD
    assert [(Path(p).name, "broken" in p) for p, _ in report.failures] == [("broken.jpg", True)]
    assert_matches(read_output(out), reference(model_dir, folder))
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["model"] == os.fspath(model_dir) and manifest["n_items"] == N_GOOD + 1
    assert sum(s["rows"] for s in manifest["shards"].values()) == N_GOOD
    assert {m for s in out.glob("shard-*") for m in pq.read_table(s)["model"].to_pylist()} == {
        os.fspath(model_dir)
    }


class Interrupted(Exception):
    pass


@pytest.mark.slow  # a local Ray instance: engine end to end
def test_rerun_after_interruption_skips_finished_shards(local_ray, model_dir, folder, tmp_path):
    out = tmp_path / "out"

    def stop_after_first(name: str) -> None:
        raise Interrupted(name)

    with pytest.raises(Interrupted):
        embed(folder, out, model=model_dir, shard_size=4, batch_size=4, on_shard=stop_after_first)
    first = out / "shard-00000.parquet"
    assert sorted(p.name for p in out.glob("shard-*")) == [first.name]
    stamp = first.stat().st_mtime_ns
    report = embed(folder, out, model=model_dir, shard_size=4, batch_size=4)
    assert report.skipped == [first.name]
    assert report.written == ["shard-00001.parquet", "shard-00002.parquet"]
    assert first.stat().st_mtime_ns == stamp  # not rewritten
    assert_matches(read_output(out), reference(model_dir, folder))
    again = embed(folder, out, model=model_dir, shard_size=4, batch_size=4)
    assert again.written == [] and len(again.skipped) == 3
    with pytest.raises(ValueError, match="shard_size"):  # a different layout is refused
        embed(folder, out, model=model_dir, shard_size=5)


def killing_factory(model_dir: Path, marker: Path):
    """A model whose first encode (in whichever process) SIGKILLs that process."""

    def factory():
        import clipforge

        model = clipforge.load(model_dir)
        encode = model.encode_image

        def encode_once_then_die(*args, **kwargs):
            if not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
            return encode(*args, **kwargs)

        model.encode_image = encode_once_then_die
        return model

    return factory


@pytest.mark.slow  # a local Ray instance: engine end to end
def test_killed_worker_still_yields_every_good_image_once(local_ray, model_dir, folder, tmp_path):
    marker = tmp_path / "killed"
    out = tmp_path / "out"
    report = embed(folder, out, model=killing_factory(model_dir, marker), model_id="tiny",
                   shard_size=4, batch_size=3)  # fmt: skip
    assert marker.exists()  # an encoder process was killed mid-batch
    assert report.n_embedded == N_GOOD and len(report.failures) == 1
    assert_matches(read_output(out), reference(model_dir, folder))


@pytest.mark.slow  # a local Ray instance: engine end to end
def test_cli_embed_engine_ray(local_ray, model_dir, folder, tmp_path):
    from typer.testing import CliRunner

    from clipforge.cli import app

    out = tmp_path / "out"
    args = ["embed", str(folder), "--engine", "ray", "-o", str(out), "-m", str(model_dir),
            "--shard-size", "6", "--batch-size", "4"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output  # the broken file is reported: exit 1
    assert "broken.jpg" in result.output and "wrote 10 embeddings in 2 shard(s)" in result.output
    assert_matches(read_output(out), reference(model_dir, folder))


def test_cpu_encoder_uses_the_threads_it_is_given(model_dir):
    """Ray pins a 1-CPU actor to one OpenMP thread; the encoder sets its own count."""
    from clipforge.distributed.ray_embed import _Encoder

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _Encoder(str(model_dir), None, "cpu", None, True, threads=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
