"""Hostile checkpoints are refused before anything large is allocated (issue 9).

Each attack is a tiny file that used to make ``clipforge.load`` allocate until the machine
ran out. They are loaded in a subprocess whose address space is capped at what it already
uses plus 1.5 GiB (``resource.setrlimit(RLIMIT_AS)``): the load must end in a clean
``CheckpointError`` naming the file (and the key), never a ``MemoryError`` or a crash.
"""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import clipforge

from ..conftest import REPO, tiny_model

_WORKER = r"""
import json, resource, sys
import clipforge, torch

def used_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()

limit = used_bytes() + (3 << 29)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
results = {}
for name, path in json.loads(sys.argv[1]).items():
    try:
        clipforge.load(path)
        results[name] = {"type": "loaded", "message": ""}
    except BaseException as err:  # MemoryError included: that is the failure we test for
        results[name] = {"type": type(err).__name__, "message": str(err)}
print(json.dumps(results))
"""

STRAY_KEY = "visual.transformer.resblocks.999999.ln_1.weight"


class _Storage:
    """Pickled as a TorchScript/torch.save storage record (``persistent_id``)."""

    def __init__(self, key: str, numel: int) -> None:
        self.key, self.numel = key, numel


class _View:
    """Pickled as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride, False, {})

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
        return None


def torchscript_archive(path: Path, size: tuple, stride: tuple, offset: int = 0) -> Path:
    """A TorchScript-layout zip whose one tensor is the view ``(offset, size, stride)`` of a
    one-element storage (``visual.proj``)."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump(
        {"visual.proj": _View(_Storage("0", 1), offset, size, stride)}
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/constants.pkl", pickle.dumps(()))
        archive.writestr("archive/data/0", torch.ones(1).numpy().tobytes())
    return path


def stride0_pickle(path: Path) -> Path:
    """A ``torch.save``-style pickle whose ``logit_scale`` is a stride-0 view of 10**11."""

    class Big:
        def __reduce_ex__(self, protocol):
            storage = torch.zeros(1).untyped_storage()
            return (torch._utils._rebuild_tensor_v2, (storage, 0, (10**11,), (0,), False, {}))

    torch.save({"logit_scale": Big(), "visual.proj": torch.zeros(2, 2)}, path)
    return path


@pytest.fixture(scope="module")
def attacks(tmp_path_factory):
    """Load every hostile file in one memory-capped subprocess: ``{name: (path, result)}``."""
    root = tmp_path_factory.mktemp("hostile")
    model = tiny_model()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    files = {}
    files["stray_block"] = root / "stray.safetensors"
    save_file({**state, STRAY_KEY: torch.ones(64)}, str(files["stray_block"]))
    for name, tower, layers in (("hf_layers", "vision", 1_000_000), ("hf_deep", "text", 20_000)):
        directory = root / name
        clipforge.save(model, directory, format="hf")
        config = json.loads((directory / "config.json").read_text())
        config[f"{tower}_config"]["num_hidden_layers"] = layers
        (directory / "config.json").write_text(json.dumps(config))
        files[name] = directory
    files["ts_stride0"] = torchscript_archive(root / "stride0.pt", (10**12,), (0,))
    files["ts_out_of_bounds"] = torchscript_archive(root / "oob.pt", (10**9,), (1,))
    files["pickle_stride0"] = stride0_pickle(root / "stride0_state.pt")
    paths = {name: str(path) for name, path in files.items()}
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER, json.dumps(paths)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: (paths[name], results[name]) for name in paths}


def _refused(attacks, name: str) -> str:
    path, result = attacks[name]
    assert result["type"] == "CheckpointError", result
    assert path in result["message"], result["message"]
    return result["message"]


def test_stray_block_key_in_bare_safetensors_is_refused_by_name(attacks):
    message = _refused(attacks, "stray_block")
    assert STRAY_KEY in message and "block 2 is missing" in message


def test_hf_config_with_a_million_layers_is_refused_before_building(attacks):
    message = _refused(attacks, "hf_layers")
    assert "config.json" in message and "vision.layers=1000000" in message
    assert "over the limit" in message and "CLIPFORGE_MAX_PARAMETERS" in message


def test_hf_config_deeper_than_its_weights_is_refused_under_the_cap(attacks):
    message = _refused(attacks, "hf_deep")
    assert "config.json" in message and "text.layers=20000" in message
    assert "blocks" in message and "does not describe these weights" in message


def test_torchscript_stride0_view_is_refused(attacks):
    message = _refused(attacks, "ts_stride0")
    assert "stride-0 or overlapping view" in message


def test_torchscript_out_of_bounds_view_is_refused(attacks):
    message = _refused(attacks, "ts_out_of_bounds")
    assert "reaches past the end of its storage of 1 elements" in message


def test_pickled_stride0_view_is_refused_naming_the_key(attacks):
    message = _refused(attacks, "pickle_stride0")
    assert "logit_scale" in message and "stride-0 or overlapping view" in message


# ----------------------------------------------------------------------------- caps, in process
@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model().state_dict().items()}, str(path))
    return path


def test_parameter_cap_has_an_argument_and_an_environment_override(tiny_file, monkeypatch):
    with pytest.raises(clipforge.CheckpointError, match="over the limit of 1,000") as err:
        clipforge.load(tiny_file, max_parameters=1000)
    assert str(tiny_file) in str(err.value)
    monkeypatch.setenv("CLIPFORGE_MAX_PARAMETERS", "1e3")
    with pytest.raises(clipforge.CheckpointError, match="over the limit of 1,000"):
        clipforge.load(tiny_file)
    assert clipforge.load(tiny_file, max_parameters=10**9).num_parameters()["total"] > 1000


def test_config_and_weights_are_compared_on_meta_before_allocating(tiny_file, monkeypatch):
    def no_real_model(*args, **kwargs):
        raise AssertionError("a real model was built before the shapes were checked")

    monkeypatch.setattr("clipforge.api.create_model", no_real_model)
    wrong = tiny_model().config.replace(embed_dim=48)
    with pytest.raises(clipforge.CheckpointMismatchError, match="mismatched shapes"):
        clipforge.load(wrong, weights=tiny_file)
