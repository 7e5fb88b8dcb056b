"""MEDIC-AD composed on the tiny backbone: shapes, stages, ablations, persistence, user API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medic_ad import MedicAD
from medic_ad.data.templates import DETECTION_PROMPT, change_prompt
from medic_ad.data.templates import ChatExample


def _images(n, seed=0, size=(130, 110)):
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random(size) * 255).astype(np.uint8)).convert("RGB") for _ in range(n)]


def _mixed_batch(model, with_answers=False):
    a, b, c = _images(3)
    return model.prepare(
        [ChatExample([a], DETECTION_PROMPT, "Yes."), ChatExample([b, c], change_prompt("left lung"), "C: Worsened")],
        with_answers=with_answers,
    )


def test_token_counts_in_mixed_batch(tiny_model):
    batch = _mixed_batch(tiny_model)
    ids = batch["input_ids"]
    p = tiny_model.processor
    assert (ids[0] == p.ano_token_id).sum() == 16
    assert (ids[1] == p.ano_token_id).sum() == 32
    assert (ids[0] == p.diff_token_id).sum() == 0
    assert (ids[1] == p.diff_token_id).sum() == tiny_model.diff.num_tokens == 16
    with torch.no_grad():
        out = tiny_model(**batch, compute_heatmap=True)
    assert out.ano_tokens.shape == (3, 16, tiny_model.backbone.config.text_config.hidden_size)
    assert out.diff_tokens.shape[:2] == (1, 16)
    assert out.logits.shape[:2] == ids.shape


def test_configured_number_of_diff_tokens():
    model = MedicAD.tiny(seed=0, diff_pool_size=3, pool_size=2)
    a, b = _images(2)
    batch = model.prepare([ChatExample([a, b], change_prompt())])
    assert (batch["input_ids"] == model.processor.diff_token_id).sum() == 9
    assert (batch["input_ids"] == model.processor.ano_token_id).sum() == 8
    with torch.no_grad():
        out = model(**batch)
    assert out.diff_tokens.shape[1] == 9 and out.ano_tokens.shape[1] == 4


def test_diff_tokens_placed_after_question(tiny_model):
    a, b = _images(2)
    batch = tiny_model.prepare([ChatExample([a, b], change_prompt())])
    ids = batch["input_ids"][0].tolist()
    p = tiny_model.processor
    last_image = max(i for i, t in enumerate(ids) if t == p.image_token_id)
    last_ano = max(i for i, t in enumerate(ids) if t == p.ano_token_id)
    first_diff = ids.index(p.diff_token_id)
    assert last_image < last_ano < first_diff
    text_between = p.tokenizer.decode(ids[last_ano + 1:first_diff])
    assert text_between.strip().endswith("C: Worsened.")


def test_maps_are_sigmoid_probabilities_and_heatmap_matches_input(tiny_model):
    batch = _mixed_batch(tiny_model)
    with torch.no_grad():
        out = tiny_model(**batch, compute_heatmap=True)
    for maps, (h, w), heat in zip(out.anomaly_maps, out.grids, out.heatmap_logits):
        assert maps.abnormal.shape == (len(tiny_model.feature_layers), h, w)
        for m in (maps.abnormal, maps.normal):
            assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0
        assert float(maps.anomaly.min()) >= -1.0 and float(maps.anomaly.max()) <= 1.0
        assert heat.shape == (h * 14, w * 14)


def _expected_trainable(model, stage):
    names = set()
    module = {1: "anomaly.", 2: "diff.", 3: "heatmap."}[stage]
    names |= {n for n, _ in model.named_parameters() if n.startswith(module)}
    if stage in (1, 2):
        names |= {n for n, _ in model.named_parameters() if "lora_" in n}
    return names


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_gradients_reach_exactly_the_stage_parameters(stage):
    model = MedicAD.tiny(seed=0)
    model.set_stage(stage)
    expected = _expected_trainable(model, stage)
    assert model.trainable_parameter_names() == expected
    assert any(n.startswith("anomaly.soft_prompts") for n in expected) == (stage == 1)
    model.train()
    batch = _mixed_batch(model, with_answers=True)
    out = model(**batch, compute_lm=stage != 3, compute_heatmap=stage == 3)
    loss = out.loss if stage != 3 else sum(h.sigmoid().mean() for h in out.heatmap_logits)
    if stage == 1:
        loss = loss + sum(m.abnormal_logits.mean() for m in out.anomaly_maps)
    loss.backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    assert got == expected


def test_ablation_switches_change_the_output():
    batch_model = MedicAD.tiny(seed=0)
    batch = _mixed_batch(batch_model)
    outs = {}
    for name, kwargs in {"full": {}, "no_modulation": {"modulate": False}, "last_layer": {"multi_scale": False}}.items():
        model = MedicAD.tiny(seed=0, **kwargs)
        with torch.no_grad():
            outs[name] = model(**batch)
    assert not torch.allclose(outs["full"].ano_tokens, outs["no_modulation"].ano_tokens)
    assert not torch.allclose(outs["full"].ano_tokens, outs["last_layer"].ano_tokens)
    assert not torch.allclose(outs["full"].logits, outs["no_modulation"].logits)
    assert MedicAD.tiny(seed=0, multi_scale=False).feature_layers == [3]


def test_save_load_identical_logits(tmp_path):
    model = MedicAD.tiny(seed=0)
    with torch.no_grad():  # make LoRA non-trivial so the round trip means something
        for name, p in model.lora_parameters().items():
            p.add_(torch.randn_like(p) * 0.05)
    batch = _mixed_batch(model)
    with torch.no_grad():
        before = model(**batch, compute_heatmap=True)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = MedicAD.from_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        after = loaded(**batch, compute_heatmap=True)
    assert torch.equal(before.logits, after.logits)
    assert torch.equal(before.heatmap_logits[0], after.heatmap_logits[0])
    # the saved backbone is an ordinary Qwen2.5-VL folder with HF keys (no LoRA rows)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ckpt" / "backbone" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not any("lora_" in k or "base_layer" in k for k in keys)
    assert any(k.endswith("self_attn.q_proj.weight") for k in keys)


def test_save_is_atomic_and_errors_are_readable(tmp_path, tiny_model):
    target = tmp_path / "ckpt"
    tiny_model.save_pretrained(target)
    weights = target / "medic_ad.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="medic_ad.safetensors: unreadable or truncated"):
        MedicAD.from_pretrained(target)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MedicAD.from_pretrained(tmp_path / "missing")
    (tmp_path / "notckpt").mkdir()
    with pytest.raises(ValueError, match="not a MEDIC-AD checkpoint"):
        MedicAD.from_pretrained(tmp_path / "notckpt")
    other = MedicAD.tiny(seed=0, pool_size=2)
    other.save_pretrained(tmp_path / "other")
    cfg = (tmp_path / "other" / "medic_ad_config.json")
    cfg.write_text(cfg.read_text().replace('"pool_size": 2', '"pool_size": 4'))
    with pytest.raises(ValueError, match="query_pos has shape"):
        MedicAD.from_pretrained(tmp_path / "other")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_a_checkpoint_refuses_a_backbone_it_was_not_trained_on(tmp_path):
    """A checkpoint names its backbone by path; if that folder now holds other weights of the same
    shapes (replaced, retrained), loading stops with one message instead of answering with them."""
    from medic_ad.models.qwen2_5_vl.backbone import Backbone
    from medic_ad.models.qwen2_5_vl.tiny import build_tiny_qwen2_5_vl

    folder = tmp_path / "backbone"
    model, processor = build_tiny_qwen2_5_vl(seed=0)
    Backbone(model=model, processor=processor, source="tiny").save_pretrained(folder)
    MedicAD.from_backbone(folder).save_pretrained(tmp_path / "ckpt")
    assert MedicAD.from_pretrained(tmp_path / "ckpt").stage == 1
    assert MedicAD.from_pretrained(tmp_path / "ckpt", dtype="bfloat16").stage == 1  # same weights, other dtype
    other, processor = build_tiny_qwen2_5_vl(seed=1)
    Backbone(model=other, processor=processor, source="tiny").save_pretrained(folder)
    with pytest.raises(ValueError, match=r"ckpt: the backbone at .*backbone is not the one this checkpoint"):
        MedicAD.from_pretrained(tmp_path / "ckpt")


def _old_decoder_layout(path):
    """Rewrite a saved checkpoint's heatmap decoder as the earlier layout (a full-width head of three
    convolutions over the joined features and pixels, no split join) would have saved it."""
    from safetensors.torch import load_file, save_file

    weights = path / "medic_ad.safetensors"
    state = {k: v for k, v in load_file(str(weights)).items()
             if not k.startswith(("heatmap.head.", "heatmap.feature_join.", "heatmap.pixel_join."))}
    width = state["heatmap.pixel_stem.0.weight"].shape[0] * 2
    for i, (out, k) in enumerate(((width, 3), (width, 3), (1, 1))):
        state[f"heatmap.head.{2 * i}.weight"] = torch.randn(out, width, k, k)
        state[f"heatmap.head.{2 * i}.bias"] = torch.zeros(out)
    save_file(state, str(weights))


def test_an_earlier_decoder_layout_loads_before_stage_3_only(tmp_path):
    """Before stage 3 the decoder is untrained: a stage-1/2 checkpoint of an earlier decoder layout keeps its
    modules and takes the decoder as built; a stage-3 checkpoint's decoder is trained and must match."""
    model = MedicAD.tiny(seed=0)
    model.set_stage(2)
    model.save_pretrained(tmp_path / "s2")
    _old_decoder_layout(tmp_path / "s2")
    loaded = MedicAD.from_pretrained(tmp_path / "s2")
    state = loaded.module_state_dict()
    assert state.keys() == model.module_state_dict().keys()
    for key, value in model.module_state_dict().items():
        if not key.startswith("heatmap."):
            assert torch.equal(state[key], value), key
    assert loaded.stage == 2
    with torch.no_grad():
        heat = loaded(**_mixed_batch(loaded), compute_lm=False, compute_heatmap=True).heatmap_logits
    assert all(torch.isfinite(h).all() for h in heat)
    model.set_stage(3)
    model.save_pretrained(tmp_path / "s3")
    _old_decoder_layout(tmp_path / "s3")
    with pytest.raises(ValueError, match="weights do not match"):
        MedicAD.from_pretrained(tmp_path / "s3")


def test_user_api(tiny_model, tmp_path):
    images = _images(6, seed=3)
    arr = np.asarray(images[0].convert("L"))
    path = tmp_path / "scan.png"
    images[1].save(path)
    results = tiny_model.detect([arr, path, *images[2:]], max_new_tokens=4)
    assert len(results) == 6
    for r in results:
        assert 0.0 <= r.score <= 1.0
        assert r.abnormal == (r.score >= 0.5)
        assert r.answer.startswith("Yes" if r.abnormal else "No")
    single = tiny_model.detect(str(path))
    assert single.score == pytest.approx(results[1].score, abs=1e-5)
    c = tiny_model.compare(images[0], images[1], region="left lower lung zone")
    assert c.label in {"worsened", "improved", "no change"}
    assert sum(c.probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert c.label == max(c.probs, key=c.probs.get)
    e = tiny_model.explain(arr)
    h = e.heatmap
    assert h.shape == arr.shape and h.dtype == np.float32
    assert h.min() >= 0.0 and h.max() <= 1.0
    # everything the one forward computed comes back: the detection and the anomaly maps too
    assert e.score == pytest.approx(results[0].score, abs=1e-5) and e.abnormal == results[0].abnormal
    assert e.anomaly_map.shape == arr.shape and 0.0 <= e.anomaly_map.min() <= e.anomaly_map.max() <= 1.0
    assert [m.shape for m in (c.prior_map, c.current_map)] == [(im.height, im.width) for im in images[:2]]


def test_greedy_generation_agrees_with_prefill(tiny_model):
    batch = tiny_model.prepare([ChatExample([im], DETECTION_PROMPT) for im in _images(2, seed=5)])
    logits = tiny_model.next_token_logits(batch)
    first = logits.argmax(-1).tolist()
    texts = tiny_model.generate(batch, max_new_tokens=1)
    assert texts == [tiny_model.processor.decode([t]) for t in first]


def test_bad_inputs_fail_clearly_before_compute(tiny_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        tiny_model.detect(tmp_path / "missing.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.png"):
        tiny_model.detect(empty)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"<html>not an image</html>")
    with pytest.raises(ValueError, match="junk.png"):
        tiny_model.explain(junk)
    with pytest.raises(ValueError, match="prior"):
        tiny_model.compare(None, _images(1)[0])
    with pytest.raises(FileNotFoundError, match="gone.png"):
        tiny_model.compare(_images(1)[0], tmp_path / "gone.png")
    batch = _mixed_batch(tiny_model)
    with torch.no_grad():
        out = tiny_model(**batch)
        with pytest.raises(ValueError, match="<Ano> tokens in the text"):
            tiny_model.build_inputs_embeds(batch["input_ids"], out.ano_tokens[:2], out.diff_tokens)
    bad = dict(batch)
    bad["images_per_sample"] = torch.tensor([1, 1])
    with pytest.raises(ValueError, match="images_per_sample"):
        tiny_model(**bad)
