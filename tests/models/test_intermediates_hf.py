"""Hidden states and the recipes that read them equal their transformers references
(≤ 1e-5, fp32, tiny random models): ``output_hidden_states`` of ``CLIPModel`` and
``SiglipModel`` at every layer, Stable Diffusion 1.x / 2.x / XL text conditioning
(``CLIPTextModel`` / ``CLIPTextModelWithProjection``, as diffusers reads them) and LLaVA's
``CLIPVisionModel(...).hidden_states[-2][:, 1:]``."""

from __future__ import annotations

import functools

import pytest
import torch
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionModel,
    SiglipConfig,
)

import clipforge
from clipforge.checkpoints.formats import siglip_hf_keys
from clipforge.errors import UsageError
from clipforge.features import hidden_state, sd_tokens

from ..checkpoints.test_parity_siglip_hf import (
    REDUCED as SIGLIP_REDUCED,
    _reference as siglip_reference,
)
from ..conftest import max_diff, perturb_, sample_images, sample_tokens, tiny_vit_config

TOL = 1e-5
pytestmark = pytest.mark.parity
TEXT = dict(vocab_size=1000, max_position_embeddings=20, eos_token_id=999, bos_token_id=998,
            num_hidden_layers=3, num_attention_heads=4)  # fmt: skip
#: a CLIP-L-like and a bigG-like pair (different widths and activations), 3 layers each
CONFIGS = {
    "L": dict(
        text_config=dict(TEXT, hidden_size=64, intermediate_size=128, hidden_act="quick_gelu"),
        vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                           num_attention_heads=3, image_size=32, patch_size=8,
                           hidden_act="quick_gelu"),
        projection_dim=24,
    ),
    "bigG": dict(
        text_config=dict(TEXT, hidden_size=80, intermediate_size=160, hidden_act="gelu"),
        vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                           num_attention_heads=3, image_size=32, patch_size=8, hidden_act="gelu"),
        projection_dim=40,
    ),
}  # fmt: skip


@functools.cache
def _clip(name: str) -> tuple[CLIPModel, clipforge.CLIP]:
    """A perturbed transformers CLIPModel and clipforge's load of its directory."""
    import tempfile

    torch.manual_seed(0)
    ref = perturb_(CLIPModel(CLIPConfig(**CONFIGS[name]))).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        model = clipforge.load(tmp).eval()
    return ref, model


def _tokens() -> torch.Tensor:
    return sample_tokens(TEXT["max_position_embeddings"], TEXT["vocab_size"])


def _assert_all_close(actual, expected) -> None:
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.shape == e.shape, i
        assert max_diff(a, e) <= TOL, (i, max_diff(a, e))


def _text_reference(name: str, cls=CLIPTextModel, layers: int | None = None):
    """transformers' text-only model of ``name``'s text tower (optionally fewer layers)."""
    ref, _ = _clip(name)
    config = ref.config.text_config
    layers = layers or config.num_hidden_layers
    config = type(config)(**{**config.to_dict(), "num_hidden_layers": layers,
                             "projection_dim": ref.config.projection_dim})  # fmt: skip
    return _load_part(cls(config).eval(), ref, "text_")


def _load_part(part: torch.nn.Module, ref: CLIPModel, prefix: str) -> torch.nn.Module:
    """``ref``'s weights into one of its towers as a stand-alone model (transformers 5 drops
    the ``text_model.``/``vision_model.`` prefix in some of them; extra layers are unused)."""
    wanted = set(part.state_dict())
    state = {}
    for key, value in ref.state_dict().items():
        short = key.split(".", 1)[1] if key.startswith(f"{prefix}model.") else key
        for candidate in (key, short):
            if key.startswith(prefix) and candidate in wanted:
                state[candidate] = value
    missing, _ = part.load_state_dict(state, strict=False)
    assert not [k for k in missing if not k.endswith("position_ids")], missing
    return part


def test_clip_hidden_states_equal_transformers_at_every_layer():
    ref, model = _clip("L")
    images, tokens = sample_images(32), _tokens()
    with torch.no_grad():
        want_image = ref.vision_model(pixel_values=images, output_hidden_states=True)
        want_text = ref.text_model(input_ids=tokens, output_hidden_states=True)
        _assert_all_close(clipforge.hidden_states(model, image=images), want_image.hidden_states)
        _assert_all_close(clipforge.hidden_states(model, text=tokens), want_text.hidden_states)
        for layer in (0, 1, -2, -1):
            assert max_diff(hidden_state(model, layer, text=tokens),
                            want_text.hidden_states[layer]) <= TOL  # fmt: skip


@pytest.mark.parametrize("name", ["base", "so400m-like"])
def test_siglip_hidden_states_equal_transformers_at_every_layer(name):
    vision, text = SIGLIP_REDUCED[name]
    ref = siglip_reference(SiglipConfig(vision_config=vision, text_config=text))
    config = siglip_hf_keys.config_to_native(ref.config.to_dict())
    model = clipforge.create_model(config).eval()
    model.load_state_dict(siglip_hf_keys.to_native(ref.state_dict()))
    images = sample_images(config.vision.image_size)
    tokens = torch.randint(0, text["vocab_size"], (3, config.text.context_length),
                           generator=torch.Generator().manual_seed(5))  # fmt: skip
    with torch.no_grad():
        want_image = ref.vision_model(pixel_values=images, output_hidden_states=True)
        want_text = ref.text_model(input_ids=tokens, output_hidden_states=True)
        _assert_all_close(clipforge.hidden_states(model, image=images), want_image.hidden_states)
        _assert_all_close(clipforge.hidden_states(model, text=tokens), want_text.hidden_states)
        patches = clipforge.llava_image_features(model, images)  # no class token: every token
        assert max_diff(patches, want_image.hidden_states[-2]) <= TOL


@pytest.mark.parametrize("select_feature", ["patch", "cls_patch"])
def test_llava_features_equal_clip_vision_model(select_feature):
    ref, model = _clip("L")
    vision = _load_part(CLIPVisionModel(ref.config.vision_config).eval(), ref, "vision_")
    images = sample_images(32)
    with torch.no_grad():
        states = vision(pixel_values=images, output_hidden_states=True).hidden_states
        want = states[-2][:, 1:] if select_feature == "patch" else states[-2]
        got = clipforge.llava_image_features(model, images, select_feature=select_feature)
    assert got.shape == want.shape
    assert max_diff(got, want) <= TOL
    assert max_diff(got, (states[-1][:, 1:] if select_feature == "patch" else states[-1])) > TOL


def test_sd1_is_clip_text_model_last_hidden_state():
    _, model = _clip("L")
    tokens = _tokens()
    with torch.no_grad():
        want = _text_reference("L")(input_ids=tokens).last_hidden_state
        got = clipforge.sd_text_conditioning(model, tokens, version="1")
    assert got.pooled_prompt_embeds is None
    assert max_diff(got.prompt_embeds, want) <= TOL


def test_sd2_is_the_penultimate_layer_after_the_final_norm():
    """diffusers' SD 2.x text encoder is OpenCLIP-H with its last block dropped (23 layers)."""
    _, model = _clip("bigG")
    tokens = _tokens()
    with torch.no_grad():
        want = _text_reference("bigG", layers=2)(input_ids=tokens).last_hidden_state
        full = _text_reference("bigG")(input_ids=tokens).last_hidden_state
        got = clipforge.sd_text_conditioning(model, tokens, version="2").prompt_embeds
    assert max_diff(got, want) <= TOL
    assert max_diff(got, full) > TOL  # not SD 1.x's


def test_sdxl_concatenates_both_penultimates_and_pools_bigg():
    (_, clip_l), (_, bigg) = _clip("L"), _clip("bigG")
    tokens = _tokens()
    with torch.no_grad():
        first = _text_reference("L")(input_ids=tokens, output_hidden_states=True)
        second = _text_reference("bigG", CLIPTextModelWithProjection)(
            input_ids=tokens, output_hidden_states=True
        )
        got = clipforge.sd_text_conditioning((clip_l, bigg), tokens, version="xl")
    want = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
    assert got.prompt_embeds.shape == (tokens.shape[0], tokens.shape[1], 64 + 80)
    assert max_diff(got.prompt_embeds, want) <= TOL
    assert max_diff(got.pooled_prompt_embeds, second.text_embeds) <= TOL


def test_sd_tokens_pad_like_diffusers_tokenizers():
    model = clipforge.create_model(tiny_vit_config())
    plain = model.tokenize(["a red square", "a much longer prompt about a blue circle"])
    eot = model.config.text.vocab_size - 1
    padded = sd_tokens(model, ["a red square", "a much longer prompt about a blue circle"], "eot")
    for row in range(2):
        end = int((plain[row] == eot).nonzero()[0])
        assert torch.equal(padded[row, : end + 1], plain[row, : end + 1])
        assert bool((padded[row, end:] == eot).all())
    assert torch.equal(sd_tokens(model, ["a red square"], "zero"), plain[:1])


def test_recipes_refuse_wrong_arguments():
    _, model = _clip("L")
    with pytest.raises(UsageError, match="exactly one"):
        clipforge.hidden_states(model)
    with pytest.raises(UsageError, match="out of range"):
        hidden_state(model, 5, text=_tokens())
    with pytest.raises(UsageError, match="clip_l, clip_bigg"):
        clipforge.sd_text_conditioning(model, _tokens(), version="xl")
    with pytest.raises(UsageError, match="version"):
        clipforge.sd_text_conditioning(model, _tokens(), version="3")
    with pytest.raises(UsageError, match="select_feature"):
        clipforge.llava_image_features(model, sample_images(32), select_feature="cls")
