"""Memory and precision at 7B, proven on the tiny model (issue 17, "Memory and precision").

Each defect of the issue has a test here that fails on the code before the fix:
- the LM head ran over every position (``test_lm_head_runs_only_at_supervised_positions``);
- no image-size cap (``test_processor_cap_bounds_tokens_and_is_per_image``, ``test_checkpoint_records_the_cap``);
- LoRA trained in bf16 on a bf16 backbone (``test_lora_is_float32_on_a_bf16_backbone``);
- ``sdpa`` hard-coded (``test_attn_implementation_reaches_the_backbone``, ``test_flash_attention_missing_is_one_clear_error``).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from medic_ad import MedicAD
from medic_ad.data.templates import ChatExample
from medic_ad.models.precision import apply_precision, dtype_counts
from medic_ad.models.qwen2_5_vl.backbone import load_backbone


def _images(n: int, size=(112, 140)) -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)) for _ in range(n)]


def _train_batch(model: MedicAD) -> dict[str, torch.Tensor]:
    a, b, c = _images(3)
    return model.prepare([ChatExample([a], "Is there any abnormality in this image?", "Yes."),
                          ChatExample([b, c], "What is the condition of the lesion?", "C: Worsened")],
                         with_answers=True)


# ------------------------------------------------------------------------------------------------ logits
def test_supervised_logits_give_the_full_logits_loss_and_gradients():
    """Same loss and gradients as the backbone's full-vocabulary path (logits at every position)."""
    model = MedicAD.tiny(seed=0)
    model.set_stage(1)
    batch = _train_batch(model)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}

    def grads(loss):
        model.zero_grad(set_to_none=True)
        loss.backward()
        return {n: p.grad.clone() for n, p in trainable.items() if p.grad is not None}

    torch.manual_seed(0)
    model.train()
    new = model(**batch).loss
    g_new = grads(new)
    torch.manual_seed(0)
    full = model(**{k: v for k, v in batch.items() if k != "labels"})  # every position's logits
    old = model.backbone.loss_function(logits=full.logits, labels=batch["labels"],
                                       vocab_size=model.backbone.config.text_config.vocab_size)
    g_old = grads(old)
    torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-6)
    assert g_new.keys() == g_old.keys() and any("lora_" in n for n in g_new)
    for name in g_new:
        torch.testing.assert_close(g_new[name], g_old[name], rtol=1e-4, atol=1e-6, msg=name)


def test_lm_head_runs_only_at_supervised_positions():
    model = MedicAD.tiny(seed=0)
    batch = _train_batch(model)
    rows = []
    hook = model.backbone.get_output_embeddings().register_forward_hook(
        lambda m, args, out: rows.append(args[0].reshape(-1, args[0].shape[-1]).shape[0]))
    try:
        with torch.no_grad():
            out = model(**batch)
    finally:
        hook.remove()
    supervised = int((batch["labels"][:, 1:] != -100).sum())
    assert rows == [supervised] and supervised < batch["input_ids"].numel() // 10
    assert out.loss is not None and out.logits is None


# ------------------------------------------------------------------------------------------------ image caps
def test_processor_cap_bounds_tokens_and_is_per_image(tiny_model):
    processor = tiny_model.processor
    default = processor.pixel_cap
    big = _images(1, size=(600, 800))[0]
    try:
        processor.set_pixel_cap(3136, 28 * 28 * 9)
        capped = processor.preprocess_images([big])
        assert int(capped["image_grid_thw"].prod()) // 4 <= 9 == processor.max_image_tokens()
        # per-image caps: the mixed call equals the two single calls, rows in image order
        small, large = (3136, 28 * 28 * 4), (3136, 28 * 28 * 16)
        a, b = _images(2, size=(300, 400))
        mixed = processor.preprocess_images([a, b], [small, large])
        one = processor.preprocess_images([a], [small])
        two = processor.preprocess_images([b], [large])
        assert torch.equal(mixed["pixel_values"], torch.cat([one["pixel_values"], two["pixel_values"]]))
        assert torch.equal(mixed["image_grid_thw"], torch.cat([one["image_grid_thw"], two["image_grid_thw"]]))
        assert int(one["image_grid_thw"].prod()) // 4 <= 4 < int(two["image_grid_thw"].prod()) // 4 <= 16
        with pytest.raises(ValueError, match="min_pixels .* is above max_pixels"):
            processor.set_pixel_cap(28 * 28 * 20, 28 * 28 * 10)
    finally:
        processor.set_pixel_cap(*default)


def test_checkpoint_records_the_cap(tmp_path):
    model = MedicAD.tiny(seed=0)
    model.processor.set_pixel_cap(3136, 28 * 28 * 9)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = MedicAD.from_pretrained(tmp_path / "ckpt")
    assert loaded.processor.pixel_cap == (3136, 28 * 28 * 9)


# ------------------------------------------------------------------------------------------------ precision
def test_lora_is_float32_on_a_bf16_backbone(tmp_path):
    """peft makes LoRA rows in the base layer's dtype; trained in bf16 they lose small AdamW updates."""
    model = MedicAD.tiny(seed=0)
    model.save_pretrained(tmp_path / "ckpt", save_backbone=True)
    loaded = MedicAD.from_pretrained(tmp_path / "ckpt", dtype="bfloat16")
    assert {p.dtype for p in loaded.lora_parameters().values()} == {torch.float32}
    assert loaded.backbone.model.language_model.layers[0].mlp.up_proj.base_layer.weight.dtype == torch.bfloat16
    for name, p in model.lora_parameters().items():  # the saved fp32 LoRA comes back unrounded
        assert torch.equal(loaded.lora_parameters()[name], p)


def _step(model: MedicAD, batch, *, autocast: bool) -> tuple[float, torch.optim.Optimizer]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    torch.manual_seed(0)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(**batch).loss
    loss.backward()
    opt.step()
    return float(loss.detach()), opt


@pytest.mark.parametrize("stage", [1, 2])
def test_bf16_frozen_policy_trains_on_cpu(stage):
    ref = MedicAD.tiny(seed=0)
    ref.set_stage(stage)
    batch = _train_batch(ref)
    ref_loss, _ = _step(ref, batch, autocast=False)  # the fp32 run
    model = MedicAD.tiny(seed=0)
    model.set_stage(stage)
    apply_precision(model, "bf16-frozen", backbone=model.backbone)
    counts = dtype_counts(model)
    assert set(counts["trainable"]) == {torch.float32}
    assert counts["frozen"][torch.bfloat16] > 0.9 * sum(p.numel() for p in model.backbone.parameters()
                                                        if not p.requires_grad)
    for module in (model.anomaly, model.diff, model.heatmap):  # MEDIC-AD's own weights stay fp32 when frozen
        assert {p.dtype for p in module.parameters()} == {torch.float32}
    assert {p.dtype for p in model.lora_parameters().values()} == {torch.float32}
    loss, opt = _step(model, batch, autocast=True)
    states = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    assert states and {t.dtype for t in states} == {torch.float32}
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    assert np.isfinite(loss) and abs(loss - ref_loss) < 0.05 * abs(ref_loss)


# ------------------------------------------------------------------------------------------------ attention
def test_attn_implementation_reaches_the_backbone(tmp_path):
    model = MedicAD.tiny(seed=0)
    model.save_backbone(tmp_path / "bb")
    assert load_backbone(tmp_path / "bb", attn_implementation="eager").model.config._attn_implementation == "eager"
    assert MedicAD.tiny(seed=0, attn_implementation="eager").backbone.config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        load_backbone(tmp_path / "bb", attn_implementation="flash")


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed here")
def test_flash_attention_missing_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="needs the flash-attn package, which is not installed"):
        MedicAD.tiny(seed=0, attn_implementation="flash_attention_2")
