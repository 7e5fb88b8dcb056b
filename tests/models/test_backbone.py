"""The tiny offline backbone, its processor and the real loading path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from medic_ad.models.qwen2_5_vl.backbone import Backbone, BackboneLoadError, VisionTap, load_backbone
from medic_ad.data.templates import ChatExample
from medic_ad.models.qwen2_5_vl.processing import ANO_TOKEN, DIFF_TOKEN
from medic_ad.models.qwen2_5_vl.tiny import TinyBackboneConfig, build_tiny_qwen2_5_vl


@pytest.fixture(scope="module")
def tiny_backbone():
    return build_tiny_qwen2_5_vl(seed=0)


@pytest.fixture(scope="module")
def saved_backbone(tmp_path_factory, tiny_backbone):
    model, processor = tiny_backbone
    path = tmp_path_factory.mktemp("bb") / "tiny-qwen"
    Backbone(model=model, processor=processor, source="tiny").save_pretrained(path)
    return path


def _batch(processor, sizes=((130, 110),)):
    rng = np.random.default_rng(1)
    images = [Image.fromarray((rng.random(s) * 255).astype(np.uint8)).convert("RGB") for s in sizes]
    return processor([ChatExample(images, "Is there any abnormality in this image?")])


def test_tokenizer_has_qwen_and_medic_tokens(tiny_backbone):
    _, processor = tiny_backbone
    vocab = processor.tokenizer.get_vocab()
    for tok in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", ANO_TOKEN, DIFF_TOKEN):
        assert tok in vocab
    assert processor.first_token_id("Yes") != processor.first_token_id("No")


def test_embedding_has_spare_rows(tiny_backbone):
    model, processor = tiny_backbone
    assert model.get_input_embeddings().weight.shape[0] > len(processor.tokenizer)


@pytest.mark.parametrize("size", [(56, 56), (112, 112), (130, 110), (256, 256), (300, 90)])
def test_image_processor_equals_transformers(tiny_backbone, size):
    _, processor = tiny_backbone
    cfg = TinyBackboneConfig()
    reference = Qwen2VLImageProcessorPil(min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
    rng = np.random.default_rng(size[0])
    image = Image.fromarray((rng.random(size) * 255).astype(np.uint8)).convert("RGB")
    ours = processor.preprocess_images([image])
    theirs = reference(images=[image], return_tensors="pt")
    assert torch.equal(ours["pixel_values"], theirs["pixel_values"])
    assert torch.equal(ours["image_grid_thw"], theirs["image_grid_thw"])


def test_round_trip_through_load_backbone(tiny_backbone, saved_backbone):
    model, processor = tiny_backbone
    loaded = load_backbone(saved_backbone, dtype="float32")
    batch = _batch(processor)
    batch2 = _batch(loaded.processor)
    for key in ("input_ids", "pixel_values", "image_grid_thw"):
        assert torch.equal(batch[key], batch2[key])
    kwargs = {k: v for k, v in batch.items() if k != "images_per_sample"}
    with torch.no_grad():
        a = model(**kwargs).logits
        b = loaded.model(**kwargs).logits
    assert torch.equal(a, b)


def test_load_backbone_errors(tmp_path, saved_backbone):
    with pytest.raises(BackboneLoadError, match="does not exist"):
        load_backbone(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BackboneLoadError, match="no config.json"):
        load_backbone(empty)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(BackboneLoadError, match="not a Qwen2.5-VL"):
        load_backbone(wrong)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((saved_backbone / "config.json").read_text())
    with pytest.raises(BackboneLoadError, match="no safetensors weights"):
        load_backbone(partial)
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    for f in saved_backbone.iterdir():
        data = f.read_bytes()
        (truncated / f.name).write_bytes(data[: len(data) // 2] if f.name == "model.safetensors" else data)
    with pytest.raises(BackboneLoadError, match="weights could not be loaded"):
        load_backbone(truncated)


def test_vision_tap_restores_image_order(tiny_backbone):
    """Tapped last block in raster order, re-grouped into merge units, gives exactly f_p's output."""
    model, processor = tiny_backbone
    batch = _batch(processor, sizes=((130, 110), (112, 168)))
    visual = model.model.visual
    tap = VisionTap(visual)
    last = visual.config.depth - 1
    with torch.no_grad():
        feats = tap(batch["pixel_values"], batch["image_grid_thw"], capture=[last])
        stock = model.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"], return_dict=True)
        for i, (h, w) in enumerate(feats.grids):
            x = feats.layers[i][0]  # (h, w, d) raster
            units = x.view(h // 2, 2, w // 2, 2, -1).permute(0, 2, 1, 3, 4).reshape(-1, x.shape[-1])
            assert torch.allclose(visual.merger(units), stock.pooler_output[i], atol=1e-5)
            assert torch.allclose(feats.projected[i], stock.pooler_output[i], atol=1e-6)


def test_soft_prompts_change_features_but_not_token_count(tiny_backbone):
    model, processor = tiny_backbone
    batch = _batch(processor, sizes=((130, 110), (112, 112)))
    visual = model.model.visual
    tap = VisionTap(visual)
    blocks = list(visual.config.fullatt_block_indexes)
    prompts = {b: torch.randn(10, visual.config.hidden_size) for b in blocks}
    with torch.no_grad():
        plain = tap(batch["pixel_values"], batch["image_grid_thw"], capture=blocks)
        prompted = tap(batch["pixel_values"], batch["image_grid_thw"], prompts=prompts, capture=blocks)
    for a, b in zip(plain.projected, prompted.projected):
        assert a.shape == b.shape
        assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="full-attention"):
        tap(batch["pixel_values"], batch["image_grid_thw"], prompts={0: prompts[blocks[0]]}, capture=blocks)


def test_stock_logits_through_mm_encoder_outputs(tiny_backbone):
    """The composition hook (precomputed f_p + inputs_embeds + ids) reproduces the stock forward."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    model, processor = tiny_backbone
    n_ano, n_diff = processor.num_ano_tokens, processor.num_diff_tokens
    processor.num_ano_tokens = processor.num_diff_tokens = 0
    try:
        batch = _batch(processor)
    finally:
        processor.num_ano_tokens, processor.num_diff_tokens = n_ano, n_diff
    kwargs = {k: v for k, v in batch.items() if k != "images_per_sample"}
    tap = VisionTap(model.model.visual)
    with torch.no_grad():
        stock = model(**kwargs).logits
        feats = tap(batch["pixel_values"], batch["image_grid_thw"], capture=[1])
        embeds = model.get_input_embeddings()(batch["input_ids"])
        ours = model(
            input_ids=batch["input_ids"], inputs_embeds=embeds, attention_mask=batch["attention_mask"],
            mm_token_type_ids=batch["mm_token_type_ids"], image_grid_thw=batch["image_grid_thw"],
            mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=tuple(feats.projected))},
        ).logits
    assert torch.allclose(stock, ours, atol=1e-6)


def test_tapped_features_are_in_image_raster_order():
    """Golden: a bright block in the top-right corner changes exactly those patches' layer-0 output
    (block 0's attention output zeroed, so every patch sees only itself)."""
    model, processor = build_tiny_qwen2_5_vl(seed=0)
    image = np.zeros((112, 112), np.uint8)
    image[0:28, 84:112] = 255
    batch = processor([ChatExample([Image.fromarray(image).convert("RGB")], "x")])
    attn = model.model.visual.blocks[0].attn.proj
    attn.weight.data.zero_()
    attn.bias.data.zero_()
    with torch.no_grad():
        feats = VisionTap(model.model.visual)(batch["pixel_values"], batch["image_grid_thw"], capture=[0])
    x = feats.layers[0][0]
    changed = ((x - x[7, 0]).norm(dim=-1) > 1e-3).int()
    expected = torch.zeros(8, 8, dtype=torch.int32)
    expected[0:2, 6:8] = 1
    assert feats.grids == [(8, 8)]
    assert torch.equal(changed, expected)
