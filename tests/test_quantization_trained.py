"""int8 on a trained model: the demo's tiny ViT CLIP trained for 120 steps (~50 s on two
cores). Its embeddings stay within cosine 0.99 of fp32 and retrieval recall@10 on 200
held-out procedural scenes within 1 point."""

from __future__ import annotations

import pytest
import torch

from clipforge import load
from clipforge.data import ProceduralCaptions
from clipforge.data.procedural import caption_scene
from clipforge.demo import demo_config
from clipforge.embedding import embed_images, embed_texts
from clipforge.eval import retrieval_recall
from clipforge.quantization import quantize
from clipforge.train.loop import train


def _recall(model, precision: str) -> dict[str, float]:
    data = ProceduralCaptions(200, image_size=32, seed=2, split="test")
    scenes = [data.render(i) for i in range(200)]
    captions = [caption_scene(spec) for spec, _ in scenes]
    unique = sorted(set(captions))
    image = embed_images(model, [im for _, im in scenes], precision=precision).embeddings
    text = embed_texts(model, unique, precision=precision)
    return retrieval_recall(image, text, [[unique.index(c)] for c in captions], ks=(1, 10))


@pytest.mark.slow  # trains the demo model for 120 steps
def test_trained_demo_model_int8_within_a_point_of_fp32(tmp_path):
    cfg = demo_config(tmp_path, steps=120, batch_size=64, seed=0)
    cfg.progress = False
    torch.manual_seed(0)
    train(cfg, overwrite=True)
    model = load(tmp_path / "latest")
    report = quantize(model).quantization_report
    assert report.image_cosine >= 0.99 and report.text_cosine >= 0.99  # type: ignore[operator]
    fp32, int8 = _recall(model, "fp32"), _recall(model, "int8")
    assert fp32["image_to_text_R@1"] > 0.1  # it is trained: chance is ~1/155
    for key in ("image_to_text_R@10", "text_to_image_R@10"):
        assert abs(fp32[key] - int8[key]) <= 0.01, (key, fp32, int8)
