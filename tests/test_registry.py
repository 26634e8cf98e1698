"""The one registry type behind every extension point."""

from __future__ import annotations

import pytest

import clipforge
from clipforge.checkpoints.formats import FORMATS
from clipforge.checkpoints.pretrained import PRETRAINED
from clipforge.configs.model_config import TEXT_CONFIGS, VISION_CONFIGS
from clipforge.configs.param_counts import PARAMETER_COUNTERS
from clipforge.configs.registry import ARCHITECTURES
from clipforge.data.sources import DATA_SOURCES
from clipforge.errors import ClipforgeError, ConfigError
from clipforge.eval.registry import EVALUATORS
from clipforge.index.store import BACKENDS
from clipforge.models.tower import TOWERS
from clipforge.registry import Registry


def test_unknown_name_is_a_config_error_with_a_hint_and_the_valid_names():
    reg: Registry[int] = Registry("colour")
    reg.register("red", 1)
    reg.register("green", 2)
    with pytest.raises(ConfigError, match=r"unknown colour 'gren' \(did you mean 'green'\?\)") as e:
        reg.get("gren")
    assert "valid: ['green', 'red']" in str(e.value)
    assert isinstance(e.value, ClipforgeError) and e.value.exit_code == 2


def test_duplicate_names_are_refused_unless_replace_is_given():
    reg: Registry[int] = Registry("colour")
    reg.register("red", 1)
    with pytest.raises(ValueError, match="'red' is already registered"):
        reg.register("red", 2)
    assert reg.get("red") == 1
    reg.register("red", 3, replace=True)
    assert reg.get("red") == 3


def test_decorator_form_returns_the_entry_and_keeps_registration_order():
    reg: Registry[object] = Registry("thing")

    @reg.register("b")
    def b() -> None: ...

    reg.register("a", 1)
    assert reg.get("b") is b
    assert reg.names() == ["b", "a"] and list(reg) == ["b", "a"] and len(reg) == 2
    reg.unregister("b")
    assert "b" not in reg and reg.names() == ["a"]


def test_lazy_entries_import_on_first_use_and_fail_only_then():
    reg: Registry[object] = Registry("thing")
    reg.register_lazy("join", "os.path:join")
    reg.register_lazy("missing", "clipforge_no_such_module:x")
    import os.path

    assert reg.get("join") is os.path.join
    assert "missing" in reg.names()
    with pytest.raises(ImportError, match="needs module .clipforge_no_such_module.") as err:
        reg.get("missing")
    assert err.value.name == "clipforge_no_such_module"
    with pytest.raises(ValueError, match="module:attr"):
        reg.register_lazy("bad", "no_colon_here")


@pytest.mark.parametrize(
    ("registry", "known"),
    [
        (ARCHITECTURES, "ViT-B-32"),
        (VISION_CONFIGS, "vit"),
        (TEXT_CONFIGS, "clip"),
        (TOWERS, "ViTConfig"),
        (PARAMETER_COUNTERS, "ViTConfig"),
        (FORMATS, "open_clip"),
        (DATA_SOURCES, "csv"),
        (EVALUATORS, "zeroshot_classification"),
        (BACKENDS, "faiss"),
        (PRETRAINED, "ViT-B-32/openai"),
    ],
)
def test_every_seam_is_one_registry_with_the_same_unknown_name_policy(registry, known):
    assert isinstance(registry, Registry)
    assert known in registry.names()
    typo = known[:-1] + ("X" if known[-1] != "X" else "Y")
    with pytest.raises(ConfigError, match="did you mean"):
        registry.get(typo)


def test_registered_architecture_names_are_protected():
    with pytest.raises(ConfigError, match="built in"):
        clipforge.register_architecture(clipforge.get_config("ViT-B-32"), name="ViT-B-32")
