"""Bad configs and refused files raise CheckpointError naming the file and key (issue 9), and
an offline ``--pretrained`` fails within seconds saying how to pre-download."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch
from typer.testing import CliRunner

import clipforge
from clipforge.checkpoints import CheckpointError, UnsafeCheckpointError
from clipforge.cli import app

from ..conftest import tiny_model
from .test_hostile_checkpoints import torchscript_archive

runner = CliRunner()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tiny model saved once per format: ``{"hf": dir, "clipforge": dir}``."""
    root = tmp_path_factory.mktemp("saved")
    model = tiny_model()
    return {fmt: clipforge.save(model, root / fmt, format=fmt) for fmt in ("hf", "clipforge")}


def _copy(directory, tmp_path):
    import shutil

    return shutil.copytree(directory, tmp_path / directory.name)


def _edit_json(path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (
            lambda c: c["vision_config"].update(num_hidden_layers="12"),
            "vision_config.num_hidden_layers",
        ),
        (lambda c: c["text_config"].update(hidden_size=[512]), "text_config.hidden_size"),
        (lambda c: c.update(vision_config=[1, 2]), "vision_config must be a mapping"),
        (lambda c: c["text_config"].update(hidden_act=3), "text_config.hidden_act"),
        (lambda c: c.update(projection_dim=None), "projection_dim"),
        (lambda c: c["vision_config"].update(num_hidden_layers=-1), "vision.layers"),
    ],
    ids=["str-layers", "list-width", "list-section", "int-act", "null-dim", "negative-layers"],
)
def test_wrong_typed_hf_config_fields_name_file_and_key(saved, tmp_path, edit, key):
    directory = _copy(saved["hf"], tmp_path)
    _edit_json(directory / "config.json", edit)
    with pytest.raises(CheckpointError) as err:
        clipforge.load(directory)
    assert str(directory / "config.json") in str(err.value) and key in str(err.value)


def test_non_utf8_and_non_object_configs_name_the_file(saved, tmp_path):
    directory = _copy(saved["hf"], tmp_path)
    config = directory / "config.json"
    config.write_bytes(b'{"projection_dim": "caf\xe9"}')
    with pytest.raises(CheckpointError, match="unreadable JSON config") as err:
        clipforge.load(directory)
    assert str(config) in str(err.value)
    config.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="must be an object, got list"):
        clipforge.load(directory)


def test_native_config_without_model_or_with_bad_fields(saved, tmp_path):
    directory = _copy(saved["clipforge"], tmp_path)
    config = directory / "clipforge_config.json"
    _edit_json(config, lambda c: c.pop("model"))
    with pytest.raises(CheckpointError, match="missing key 'model'") as err:
        clipforge.load(directory)
    assert str(config) in str(err.value)
    directory = _copy(saved["clipforge"], tmp_path / "again")
    config = directory / "clipforge_config.json"
    _edit_json(config, lambda c: c["model"]["vision"].update(layers="two"))
    with pytest.raises(CheckpointError, match="model.vision.layers") as err:
        clipforge.load(directory)
    assert str(config) in str(err.value)


def test_bad_config_is_a_one_line_failed_input_in_the_cli(saved, tmp_path):
    directory = _copy(saved["hf"], tmp_path)
    _edit_json(directory / "config.json", lambda c: c.update(vision_config="x"))
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    result = runner.invoke(app, ["similarity", "-i", str(image), "-t", "x", "-m", str(directory)])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "vision_config must be a mapping" in errors[0]
    assert "Traceback" not in result.output


def test_torchscript_out_of_bounds_view_is_a_checkpoint_error(tmp_path):
    path = torchscript_archive(tmp_path / "oob.pt", (4,), (1,), offset=1)
    with pytest.raises(CheckpointError, match="reaches past the end") as err:
        clipforge.checkpoints.read_state_dict(path)
    assert str(path) in str(err.value)


def test_refused_pickle_names_the_offending_global(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    path = tmp_path / "evil.pt"
    torch.save({"w": Evil()}, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        clipforge.load(path)
    assert "os.system" in str(err.value) and str(path) in str(err.value)


def test_latest_pointer_to_a_missing_step_names_the_pointer(tmp_path):
    (tmp_path / "latest").write_text("step_1\n")
    with pytest.raises(CheckpointError, match="training run without an intact model") as err:
        clipforge.load(tmp_path / "latest")
    assert str(tmp_path / "latest") in str(err.value)
    (tmp_path / "latest").write_text("../elsewhere\n")
    with pytest.raises(CheckpointError, match="refusing to follow it"):
        clipforge.load(tmp_path)


def test_damaged_newest_step_falls_back_to_an_older_intact_one(saved, tmp_path):
    import shutil

    for step in (1, 2):
        shutil.copytree(saved["clipforge"], tmp_path / f"step_{step}")
    (tmp_path / "step_2" / "model.safetensors").write_bytes(b"truncated")
    (tmp_path / "latest").write_text("step_2\n")
    model = clipforge.load(tmp_path / "latest")
    expected = tiny_model().state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------- offline hub
@pytest.mark.parametrize(
    "env",
    [{"HF_ENDPOINT": "http://127.0.0.1:9"}, {"HF_HUB_OFFLINE": "1"}],
    ids=["refused", "offline"],
)
def test_offline_pretrained_fails_fast_with_predownload_advice(tmp_path, monkeypatch, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        clipforge.load("ViT-B-32", pretrained="openai", cache_dir=tmp_path)
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert "hf download timm/vit_base_patch32_clip_224.openai" in message
    assert "huggingface-cli download" in message and "--model DIR" in message


def test_offline_pretrained_in_the_cli_is_one_line(tmp_path):
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    start = time.perf_counter()
    result = runner.invoke(
        app, ["similarity", "-i", str(image), "-t", "x", "--pretrained", "openai"], env=env
    )
    assert time.perf_counter() - start < 10
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "hf download" in errors[0] and "--model DIR" in errors[0]
