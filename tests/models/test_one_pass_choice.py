"""detect/compare in one generate: the score read at the first step equals the prefill score."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medic_ad import MedicAD
from medic_ad.data import templates
from medic_ad.models import interface
from medic_ad.models import medic_ad as medic_ad_module
from medic_ad.models.decoding import ConstrainedChoice
from medic_ad.data.templates import CHANGE_OF_LETTER, DETECTION_PROMPT, change_prompt
from medic_ad.data.templates import ChatExample

SIZES = [(130, 110), (90, 160), (200, 120), (64, 64)]  # different token counts: left padding in the batch


def _images(seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random(s) * 255).astype(np.uint8)).convert("RGB") for s in SIZES]


@pytest.fixture(scope="module")
def model():
    """Non-trivial LoRA, and the "Yes" row of the LM head shifted along the mean answer-position state
    so the images split between Yes and No (both branches run; the random model leans one way)."""
    m = MedicAD.tiny(seed=0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.lora_parameters().values():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    yes, no = m.processor.first_token_id("Yes"), m.processor.first_token_id("No")
    head = m.backbone.lm_head
    states = []
    handle = head.register_forward_pre_hook(lambda mod, args: states.append(args[0][:, -1].detach()))
    try:
        images = [im for seed in range(6) for im in _images(seed)]
        logits = m.next_token_logits(m.prepare([ChatExample([im], DETECTION_PROMPT) for im in images]))
    finally:
        handle.remove()
    u = torch.cat(states).mean(0)
    with torch.no_grad():
        head.weight[yes] += (logits[:, no] - logits[:, yes]).median() * u / u.pow(2).sum()
    return m


def _prefill_probs(m, images, question, tokens):
    batch = m.prepare([ChatExample(list(ims), question) for ims in images])
    return torch.softmax(m.next_token_logits(batch)[:, tokens], -1)


def test_detect_score_equals_prefill_score(model, monkeypatch, count_vision_passes):
    images = _images(1) + _images(2)
    yes, no = model.processor.first_token_id("Yes"), model.processor.first_token_id("No")
    expected = _prefill_probs(model, [[im] for im in images], DETECTION_PROMPT, [yes, no])[:, 0]
    calls = count_vision_passes(model)
    monkeypatch.setattr(model, "next_token_logits", lambda *a, **k: pytest.fail("detect ran a separate prefill"))
    results = model.detect(images, max_new_tokens=4, batch_size=len(images))
    assert calls["vision"] == 1  # one vision pass (and one prefill, inside generate) for the batch
    got = torch.tensor([r.score for r in results])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert {r.abnormal for r in results} == {True, False}  # both branches
    for r in results:
        assert r.abnormal == (r.score >= 0.5)
        assert r.answer.startswith("Yes" if r.abnormal else "No")


def test_generate_choice_probs_equal_prefill_and_answers_start_with_the_choice(model):
    images = _images(2)
    batch = model.prepare([ChatExample([im], DETECTION_PROMPT) for im in images])
    tokens = [model.processor.first_token_id(t) for t in ("No", "Yes")]
    expected = torch.softmax(model.next_token_logits(batch)[:, tokens], -1)
    out = model.generate_choice(batch, tokens, max_new_tokens=5)
    torch.testing.assert_close(out.probs, expected, atol=1e-5, rtol=0)
    assert out.chosen.tolist() == expected.argmax(-1).tolist()
    for answer, c in zip(out.answers, out.chosen.tolist()):
        assert answer.startswith(model.processor.decode([tokens[c]]))


def test_one_token_answer_is_the_decided_token(model):
    images = _images(3)
    yes, no = model.processor.first_token_id("Yes"), model.processor.first_token_id("No")
    for r in model.detect(images, max_new_tokens=1):
        assert r.answer == model.processor.decode([yes if r.abnormal else no])
    c = model.compare(images[0], images[1], max_new_tokens=1)
    letter = next(k for k, v in CHANGE_OF_LETTER.items() if v == c.label)
    assert c.answer == model.processor.decode([model.processor.first_token_id(letter)])


def test_compare_probs_equal_prefill(model):
    images = _images(4)
    letters = list(CHANGE_OF_LETTER)
    ids = [model.processor.first_token_id(k) for k in letters]
    expected = _prefill_probs(model, [images[:2]], change_prompt("left lung"), ids)[0]
    c = model.compare(images[0], images[1], region="left lung", max_new_tokens=4)
    got = torch.tensor([c.probs[CHANGE_OF_LETTER[k]] for k in letters])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    best = letters[int(expected.argmax())]
    assert c.label == CHANGE_OF_LETTER[best]
    assert c.answer.startswith(model.processor.decode([model.processor.first_token_id(best)]))


def test_answers_are_the_chosen_options_verbatim(model):
    """The text after the decided token is the chosen option, whatever the LM would continue with
    (the random model here would babble), and a short budget cuts it."""
    images = _images(1) + _images(2)
    for r in model.detect(images, max_new_tokens=8):
        assert r.answer == ("Yes." if r.abnormal else "No.")
    text = {v: f"{k}: {templates.CHANGE_OPTIONS[k]}" for k, v in CHANGE_OF_LETTER.items()}
    for r in model.compare(images[0::2], images[1::2], max_new_tokens=12):
        assert r.answer == text[r.label]
    cut = model.compare(images[0], images[1], max_new_tokens=2)
    assert cut.answer == text[cut.label].split(" ")[0]  # "C:" — the letter and the colon


def test_free_continuation_is_left_to_the_model_without_completions(model):
    images = _images(3)
    batch = model.prepare([ChatExample([im], DETECTION_PROMPT) for im in images])
    tokens = [model.processor.first_token_id(t) for t in ("Yes", "No")]
    forced = model.generate_choice(batch, tokens, max_new_tokens=6, completions=["Yes.", "No."])
    free = model.generate_choice(batch, tokens, max_new_tokens=6)
    torch.testing.assert_close(forced.probs, free.probs)
    assert forced.answers == [("Yes." if c == 0 else "No.") for c in forced.chosen.tolist()]
    assert free.answers != forced.answers  # the random LM does not stop after "Yes."/"No." by itself


def test_completions_must_start_with_their_choice():
    with pytest.raises(ValueError, match="start with its choice token"):
        ConstrainedChoice([5, 6], [[5, 1], [7, 1]], end=2)
    with pytest.raises(ValueError, match="end token"):
        ConstrainedChoice([5, 6], [[5], [6]])


def test_score_ignores_the_checkpoints_generation_processors():
    """A generation config's processors (here a sequence bias) run before custom ones in ``generate``;
    the score still comes from the model's own logits and the answer from that decision."""
    m = MedicAD.tiny(seed=0)
    images = _images(5)
    yes, no = m.processor.first_token_id("Yes"), m.processor.first_token_id("No")
    expected = _prefill_probs(m, [[im] for im in images], DETECTION_PROMPT, [yes, no])[:, 0]
    decided = expected >= 0.5
    other = no if bool(decided.all()) else yes  # favour the token the prefill did not pick
    m.backbone.generation_config.sequence_bias = {(other,): 50.0}
    results = m.detect(images, max_new_tokens=3)
    torch.testing.assert_close(torch.tensor([r.score for r in results]), expected, atol=1e-5, rtol=0)
    for r, d in zip(results, decided.tolist()):
        assert r.abnormal == d and r.answer.startswith("Yes" if d else "No")


def test_prompts_come_from_the_data_templates():
    assert interface.DETECTION_PROMPT is templates.DETECTION_PROMPT
    for region in (None, "left lower lung zone"):
        wording = templates.CHANGE_QUESTION.format(region=region or "abnormality")
        assert change_prompt(region) == f"{wording} {templates.format_options(templates.CHANGE_OPTIONS)}"
    assert change_prompt("left lung") == ("What is the condition of the left lung across the two images? "
                                          "A: No significant change, B: Improved, C: Worsened.")
    assert CHANGE_OF_LETTER == {"A": "no change", "B": "improved", "C": "worsened"}


def test_compare_of_lists_equals_one_pair_at_a_time(model):
    images = _images(1) + _images(2)  # pairs of different sizes: padded together in one generate
    priors, currents = images[0::2], images[1::2]
    batched = model.compare(priors, currents, max_new_tokens=2, batch_size=len(priors))
    assert isinstance(batched, list) and len(batched) == len(priors)
    for p, c, got in zip(priors, currents, batched):
        one = model.compare(p, c, max_new_tokens=2)
        assert got.label == one.label and got.answer == one.answer
        for k, v in one.probs.items():
            assert got.probs[k] == pytest.approx(v, abs=1e-5)
    with pytest.raises(ValueError, match="3 prior studies but 2 current"):
        model.compare(priors[:3], currents[:2])


def test_explain_of_a_list_equals_one_image_at_a_time(model):
    images = _images(3) + [_images(3)[0]]  # two share a size: they go through the decoder as one batch
    heats = [e.heatmap for e in model.explain(images, batch_size=len(images))]
    assert len(heats) == len(images)
    for im, heat in zip(images, heats):
        assert heat.shape == (im.height, im.width)
        np.testing.assert_allclose(heat, model.explain(im).heatmap, atol=1e-5)


def test_explain_splits_a_grid_group_at_the_pixel_cap(model, monkeypatch):
    images = [_images(4)[1]] * 3  # one grid: three calls at a cap of one image, one call without a cap
    calls = []
    decoder = model.heatmap.forward
    monkeypatch.setattr(model.heatmap, "forward", lambda **kw: calls.append(len(kw["projected"])) or decoder(**kw))
    monkeypatch.setattr(medic_ad_module, "HEATMAP_PIXELS_PER_CALL", 1)
    capped = model.explain(images, batch_size=3)
    assert calls == [1, 1, 1]
    monkeypatch.setattr(medic_ad_module, "HEATMAP_PIXELS_PER_CALL", 10**9)
    calls.clear()
    whole = model.explain(images, batch_size=3)
    assert calls == [3]
    for a, b in zip(capped, whole):
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-5)
