"""Merged LoRA for inference: same logits, same checkpoint, training unmerges (peft LoraLayer.merge)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from medic_ad import MedicAD
from medic_ad.data.templates import DETECTION_PROMPT, change_prompt
from medic_ad.data.templates import ChatExample

ATOL = 1e-5


def _images(n, seed=0, size=(130, 110)):
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random(size) * 255).astype(np.uint8)).convert("RGB") for _ in range(n)]


def _lora_model(seed: int = 0, noise_seed: int = 0) -> MedicAD:
    """A tiny model whose LoRA is not the identity (B = 0 at init would make merging trivial)."""
    model = MedicAD.tiny(seed=seed)
    gen = torch.Generator().manual_seed(noise_seed)
    with torch.no_grad():
        for p in model.lora_parameters().values():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def _batch(model):
    a, b, c = _images(3, seed=7)
    return model.prepare([ChatExample([a], DETECTION_PROMPT), ChatExample([b, c], change_prompt("left lung"))])


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def test_merge_keeps_logits_and_unmerge_restores():
    model = _lora_model()
    batch = _batch(model)
    before = _logits(model, batch)
    q_proj = model.backbone.model.language_model.layers[0].self_attn.q_proj
    base = q_proj.base_layer.weight.detach().clone()
    assert not model.lora_merged
    assert model.merge_lora() is model and model.lora_merged
    assert not torch.allclose(q_proj.base_layer.weight, base)  # the delta really is in the weight now
    model.merge_lora()  # a second merge is a no-op, not a double delta
    merged = _logits(model, batch)
    torch.testing.assert_close(merged, before, atol=ATOL, rtol=0)
    model.unmerge_lora()
    assert not model.lora_merged
    torch.testing.assert_close(q_proj.base_layer.weight, base, atol=1e-6, rtol=0)
    torch.testing.assert_close(_logits(model, batch), before, atol=ATOL, rtol=0)


def test_merge_without_lora_is_a_no_op():
    model = MedicAD.tiny(seed=0, llm_adaptation="none")
    assert model.merge_lora() is model and not model.lora_merged


def test_merged_save_writes_the_unmerged_checkpoint_and_round_trips(tmp_path):
    model = _lora_model()
    batch = _batch(model)
    before = _logits(model, batch)
    model.save_pretrained(tmp_path / "plain")
    model.merge_lora()
    merged = _logits(model, batch)
    model.save_pretrained(tmp_path / "merged")
    assert model.lora_merged  # saving does not leave it unmerged
    torch.testing.assert_close(_logits(model, batch), merged, atol=1e-6, rtol=0)

    plain_w = load_file(str(tmp_path / "plain" / "medic_ad.safetensors"))
    merged_w = load_file(str(tmp_path / "merged" / "medic_ad.safetensors"))
    assert plain_w.keys() == merged_w.keys()
    assert all(torch.equal(plain_w[k], merged_w[k]) for k in plain_w)  # modules + LoRA rows: bit for bit
    plain_b = load_file(str(tmp_path / "plain" / "backbone" / "model.safetensors"))
    merged_b = load_file(str(tmp_path / "merged" / "backbone" / "model.safetensors"))
    assert plain_b.keys() == merged_b.keys()
    assert not any("lora_" in k or "base_layer" in k for k in merged_b)
    for k in plain_b:  # base weights: unmerged while writing, equal to the merge's float rounding
        torch.testing.assert_close(merged_b[k], plain_b[k], atol=1e-6, rtol=0)
    meta = json.loads((tmp_path / "merged" / "medic_ad_config.json").read_text())
    assert meta["config"] == json.loads((tmp_path / "plain" / "medic_ad_config.json").read_text())["config"]

    loaded = MedicAD.from_pretrained(tmp_path / "merged")
    assert not loaded.lora_merged
    torch.testing.assert_close(_logits(loaded, batch), before, atol=ATOL, rtol=0)
    loaded_merged = MedicAD.from_pretrained(tmp_path / "merged", merge_lora=True)
    assert loaded_merged.lora_merged
    torch.testing.assert_close(_logits(loaded_merged, batch), before, atol=ATOL, rtol=0)


@pytest.mark.parametrize("stage", [1, 2])
def test_training_stages_unmerge(stage):
    model = _lora_model()
    batch = _batch(model)
    before = _logits(model, batch)
    model.merge_lora()
    model.set_stage(stage)
    assert not model.lora_merged
    torch.testing.assert_close(_logits(model, batch), before, atol=ATOL, rtol=0)
    model.train()
    a, b, c = _images(3, seed=2)
    train_batch = model.prepare([ChatExample([a], DETECTION_PROMPT, "Yes."),
                                 ChatExample([b, c], change_prompt(), "C: Worsened")], with_answers=True)
    model(**train_batch).loss.backward()
    assert all(p.grad is not None for p in model.lora_parameters().values())  # the adapters train again


def test_stage_3_keeps_the_merge():
    model = _lora_model().merge_lora()
    model.set_stage(3)
    assert model.lora_merged


def test_loading_new_lora_rows_into_a_merged_model():
    source, target = _lora_model(noise_seed=1), _lora_model(noise_seed=2).merge_lora()
    batch = _batch(source)
    target.load_module_state_dict(source.module_state_dict())
    assert target.lora_merged
    torch.testing.assert_close(_logits(target, batch), _logits(source, batch), atol=ATOL, rtol=0)


def test_serving_loads_checkpoints_merged(tiny_checkpoint):
    from medic_ad.serve.service import load_model

    assert load_model(tiny_checkpoint).lora_merged


def test_predicting_merges_and_scores_as_unmerged(tmp_path):
    from medic_ad.eval.predict import predict_task
    from medic_ad.eval.samples import load_task_samples
    from medic_ad.eval.tasks import get_task

    root = tmp_path / "folder"
    for label, values in (("abnormal", (0.9, 0.3)), ("normal", (0.1, 0.6))):
        (root / label).mkdir(parents=True)
        for i, v in enumerate(values):
            Image.fromarray(np.full((24, 20), int(v * 255), np.uint8)).save(root / label / f"{label}{i}.png")
    task = get_task("detection").with_data(root)
    samples = load_task_samples(task).samples
    model = _lora_model()
    yes, no = model.processor.first_token_id("Yes"), model.processor.first_token_id("No")
    batch = model.prepare([ChatExample([Image.open(s.images[0]).convert("RGB")], task.the_prompt) for s in samples])
    expected = torch.softmax(model.next_token_logits(batch)[:, [yes, no]], -1)[:, 0]
    out = tmp_path / "p.jsonl"
    predict_task(model, task, samples, out, model_name="tiny", batch_size=4, progress=False)
    assert model.lora_merged
    got = [json.loads(line)["score"] for line in out.read_text().splitlines()]
    np.testing.assert_allclose(got, expected.numpy(), atol=ATOL)
