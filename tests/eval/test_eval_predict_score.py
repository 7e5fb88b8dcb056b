"""Predict → JSONL → score, with a dummy model: round trips, resume after a kill, re-scoring, guards."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from medic_ad.eval.predict import predict_task, read_predictions
from medic_ad.eval.samples import load_task_samples
from medic_ad.eval.score import load_predictions, score_file, score_records
from medic_ad.eval.tasks import get_task


def _detection(image_folder):
    task = get_task("detection").with_data(image_folder)
    return task, load_task_samples(task).samples


def test_detection_round_trip(dummy, image_folder, tmp_path):
    task, samples = _detection(image_folder)
    out = tmp_path / "p.jsonl"
    summary = predict_task(dummy(), task, samples, out, model_name="dummy", batch_size=3, progress=False)
    assert summary.n_new == 8 and summary.n_before == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 8 and len({r["id"] for r in lines}) == 8
    r = lines[0]
    assert {"id", "task", "kind", "prompt", "raw", "parsed", "score", "label", "time_s", "model"} <= set(r)
    assert r["prompt"] == "Is there any abnormality in this image?" and r["task"] == "detection"
    m = score_file(out)
    # P(Yes) = brightness: abnormal .9 .8 .7 .3, normal .1 .2 .25 .6 → TP 3 FN 1 FP 1 TN 3
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((0.75, 0.75, 0.75))
    assert m["auroc"] == pytest.approx(15 / 16) and m["unparseable"] == 0
    assert m["roc"]["fpr"] and m["s_per_sample"] is not None


def test_resume_after_a_kill_mid_line(dummy, image_folder, tmp_path):
    task, samples = _detection(image_folder)
    out = tmp_path / "p.jsonl"
    predict_task(dummy(), task, samples, out, model_name="dummy", batch_size=2, progress=False, stop_after=3)
    text = out.read_text()
    assert text.count("\n") == 3
    cut = text.rfind("\n", 0, len(text) - 1) + 1 + 25  # keep 2 lines and 25 bytes of the third
    out.write_text(text[:cut])
    records, torn = read_predictions(out)
    assert torn and len(records) == 2
    model = dummy()
    summary = predict_task(model, task, samples, out, model_name="dummy", batch_size=2, progress=False)
    assert summary.torn_line_dropped and summary.n_before == 2 and summary.n_new == 6
    assert model.calls == 3  # 6 remaining samples in batches of 2: finished ones are not predicted again
    lines = out.read_text().splitlines()
    assert len(lines) == 8 and all(json.loads(x) for x in lines)
    assert sorted(json.loads(x)["id"] for x in lines) == sorted(s.id for s in samples)
    again = predict_task(dummy(), task, samples, out, model_name="dummy", progress=False)
    assert again.n_new == 0 and again.n_before == 8


def test_a_whole_last_line_without_newline_is_kept(dummy, image_folder, tmp_path):
    task, samples = _detection(image_folder)
    out = tmp_path / "p.jsonl"
    predict_task(dummy(), task, samples, out, model_name="dummy", progress=False, stop_after=2)
    out.write_text(out.read_text().rstrip("\n"))
    summary = predict_task(dummy(), task, samples, out, model_name="dummy", progress=False)
    assert summary.n_before == 2 and not summary.torn_line_dropped
    assert len([json.loads(x) for x in out.read_text().splitlines()]) == 8


def test_corrupt_middle_line_is_an_error(dummy, image_folder, tmp_path):
    task, samples = _detection(image_folder)
    out = tmp_path / "p.jsonl"
    predict_task(dummy(), task, samples, out, model_name="dummy", progress=False)
    lines = out.read_text().splitlines()
    lines[3] = lines[3][:10]
    out.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 4 is not a JSON object"):
        score_file(out)


def test_rescoring_reparses_and_rethresholds(dummy, image_folder, tmp_path):
    task, samples = _detection(image_folder)
    out = tmp_path / "p.jsonl"
    predict_task(dummy(), task, samples, out, model_name="dummy", progress=False)
    by_score = score_file(out, decision="score", threshold=0.65)
    # score ≥ .65: abnormal .9 .8 .7 → TP 3, FN 1; normal none → P 1
    assert by_score["precision"] == 1.0 and by_score["recall"] == 0.75 and by_score["decision"] == "score"
    records = [json.loads(x) for x in out.read_text().splitlines()]
    records[0]["raw"] = "I cannot determine this from the image."
    records[1]["raw"] = "There is a large hemorrhage."
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    m = score_file(out)
    assert m["unparseable"] == 1
    assert score_records(records)["unparseable"] == 1
    assert len(load_predictions(out, ids=[records[0]["id"]])) == 1


def test_a_file_from_another_task_is_refused(dummy, image_folder, tmp_path):
    task, samples = _detection(image_folder)
    out = tmp_path / "p.jsonl"
    predict_task(dummy(), task, samples[:2], out, model_name="dummy", progress=False)
    with pytest.raises(ValueError, match="holds predictions for task 'detection', not 'head_ct'"):
        score_file(out, task="head_ct")
    other = get_task("head_ct").with_data(image_folder)
    with pytest.raises(ValueError, match="holds predictions for task 'detection', not 'head_ct'"):
        predict_task(dummy(), other, samples, out, model_name="dummy", progress=False)
    with pytest.raises(ValueError, match="of model 'dummy', not 'other'"):
        predict_task(dummy(), task, samples, out, model_name="other", progress=False)
    assert predict_task(dummy(), other, samples, out, model_name="dummy", progress=False, overwrite=True).n_new == 8
    not_predictions = tmp_path / "results.json"
    not_predictions.write_text(json.dumps({"models": {}}, indent=2))
    with pytest.raises(ValueError, match="not a predictions file"):
        score_file(not_predictions)
    one_line = tmp_path / "other.jsonl"
    one_line.write_text(json.dumps({"hello": 1}) + "\n")
    with pytest.raises(ValueError, match="not a medic-ad predictions file"):
        score_file(one_line)


def test_change_round_trip_with_a_pair_file(dummy, image_folder, tmp_path):
    f = image_folder / "change_pairs.csv"
    with open(f, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["prior", "current", "change"])
        w.writerows([("abnormal/a0.png", "normal/n0.png", "improved"), ("normal/n0.png", "abnormal/a0.png", "worsened"),
                     ("normal/n1.png", "normal/n1.png", "no change")])
    task = get_task("change").with_data(f)
    samples = load_task_samples(task).samples
    out = tmp_path / "c.jsonl"
    predict_task(dummy(), task, samples, out, model_name="dummy", progress=False)
    r = json.loads(out.read_text().splitlines()[0])
    assert r["options"] == {"A": "No significant change", "B": "Improved", "C": "Worsened"}
    assert r["answer"] == "B" and r["parsed"] == "B" and set(r["probs"]) == {"A", "B", "C"}
    assert "A: No significant change, B: Improved, C: Worsened" in r["prompt"]
    m = score_file(out)
    assert m["accuracy"] == 1.0 and m["per_class"] == {"worsened": 1.0, "improved": 1.0, "no change": 1.0}
    bad = dummy(answers="maybe")
    predict_task(bad, task, samples, out, model_name="dummy", progress=False, overwrite=True)
    m = score_file(out)
    assert m["unparseable"] == 3 and m["accuracy"] == 0.0
    assert score_file(out, decision="score")["accuracy"] == 1.0  # by the option probabilities


def test_grounding_round_trip(dummy, mask_folder, tmp_path):
    task = get_task("grounding").with_data(mask_folder)
    samples = load_task_samples(task).samples
    out = tmp_path / "g.jsonl"
    predict_task(dummy(), task, samples, out, model_name="dummy", progress=False, save_heatmaps=True)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines[0]["hist_pos"]) == 256 and lines[0]["mask_pixels"] == 64
    heat = np.load(out.parent / lines[0]["heatmap_file"])["heatmap"]
    assert heat.dtype == np.uint8 and heat.shape == (24, 20)
    m = score_file(out)
    # two exact heatmaps (IoU 1) and one over an empty mask (IoU 0)
    assert m["miou"] == pytest.approx(2 / 3) and m["n_empty_masks"] == 1 and m["miou_lesion"] == 1.0
    # positives 128 px at level 255; negatives 1312 px, 64 of them at 255 (the unmasked square)
    assert m["auroc"] == pytest.approx((1248 + 32) / 1312)


def test_vqa_round_trip(dummy, tmp_path):
    root = tmp_path / "vqa_rad"
    (root / "VQA_RAD Image Folder").mkdir(parents=True)
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(root / "VQA_RAD Image Folder" / "x.png")
    recs = [{"qid": 1, "image_name": "x.png", "question": "Is this normal?", "answer": "yes", "answer_type": "CLOSED",
             "phrase_type": "test_freeform"},
            {"qid": 2, "image_name": "x.png", "question": "Which organ?", "answer": "the liver", "answer_type": "OPEN",
             "phrase_type": "test_freeform"}]
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(recs))
    task = get_task("vqa").with_data(root)
    out = tmp_path / "v.jsonl"
    predict_task(dummy(), task, load_task_samples(task).samples, out, model_name="dummy", progress=False)
    m = score_file(out, judge=lambda q, ref, pred: 0.5)
    # the dummy answers "The liver." to everything: closed yes/no unparseable, open recall 1
    assert m["n_closed"] == 1 and m["closed_accuracy"] == 0.0 and m["unparseable"] == 1
    assert m["open_recall"] == 1.0 and m["judge_score"] == 0.5


def test_grounding_needs_a_heatmap_model(dummy, mask_folder, tmp_path):
    task = get_task("grounding").with_data(mask_folder)
    model = dummy()
    model.has_heatmaps = False
    with pytest.raises(ValueError, match="no heatmap decoder"):
        predict_task(model, task, load_task_samples(task).samples, tmp_path / "g.jsonl", model_name="x",
                     progress=False)


def test_mmxu_multiple_choice_keeps_its_own_letters(dummy, image_folder, tmp_path):
    root = tmp_path / "mmxu"
    root.mkdir()
    recs = [{"id": i, "content_type": "change", "related_region_name": "left lower lung zone",
             "question": "What is the condition of the left lower lung zone across the two chest CXR images?",
             "options": {"A": "Worsened", "B": "Improved", "C": "No significant change"}, "answer": ans,
             "cur_image_path": str(image_folder / cur), "prior_image_path": [str(image_folder / prior)]}
            for i, (prior, cur, ans) in enumerate([("normal/n0.png", "abnormal/a0.png", "A"),
                                                   ("abnormal/a0.png", "normal/n0.png", "B")])]
    (root / "MMXU-test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    task = get_task("mmxu")
    samples = load_task_samples(task, data_root=tmp_path).samples
    out = tmp_path / "m.jsonl"
    predict_task(dummy(), task, samples, out, model_name="dummy", progress=False)
    r = json.loads(out.read_text().splitlines()[0])
    assert r["options"]["A"] == "Worsened" and r["answer"] == "A" and r["label"] == "worsened"
    assert r["prompt"].startswith("What is the condition of the left lower lung zone")
    assert r["raw"] == "A: Worsened"  # the dummy finds the option by its words, whatever its letter
    # the answer "C: Worsened" names letter C, which is "No significant change" here: the letter wins
    predict_task(dummy(answers="C: Worsened"), task, samples, out, model_name="dummy", progress=False,
                 overwrite=True)
    m = score_file(out, task="mmxu")
    assert m["per_class"]["worsened"] == 0.0 and m["letter"]["unparseable"] == 0
    # a free-text answer is matched to the option that says it, under this question's letters
    predict_task(dummy(answers="The opacity has worsened."), task, samples, out, model_name="dummy",
                 progress=False, overwrite=True)
    m = score_file(out, task="mmxu")
    assert m["per_class"] == {"worsened": 1.0, "improved": 0.0, "no change": None}


def test_scored_answers_of_a_medic_ad_model_are_the_chosen_options(image_folder, tmp_path):
    """MEDIC-AD answers a scored question with the chosen option verbatim, also when questions with
    different option texts under the same letters are predicted together."""
    from medic_ad import MedicAD

    root = tmp_path / "mmxu"
    root.mkdir()
    orders = [{"A": "Worsened", "B": "Improved", "C": "No significant change"},
              {"A": "No significant change", "B": "Improved", "C": "Worsened"}]
    recs = [{"id": i, "content_type": "change", "related_region_name": "left lower lung zone",
             "question": "What is the condition of the left lower lung zone across the two chest CXR images?",
             "options": orders[i % 2], "answer": "A", "cur_image_path": str(image_folder / "abnormal/a0.png"),
             "prior_image_path": [str(image_folder / "normal/n0.png")]} for i in range(4)]
    (root / "MMXU-test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    task = get_task("mmxu")
    model = MedicAD.tiny(seed=0)
    out = tmp_path / "m.jsonl"
    predict_task(model, task, load_task_samples(task, data_root=tmp_path).samples, out, model_name="tiny",
                 progress=False, max_new_tokens=12)
    for r in (json.loads(x) for x in out.read_text().splitlines()):
        chosen = max(r["probs"], key=r["probs"].get)
        assert r["raw"] == f"{chosen}: {r['options'][chosen]}" and r["parsed"] == chosen
    det, samples = _detection(image_folder)
    predict_task(model, det, samples, tmp_path / "d.jsonl", model_name="tiny", progress=False, max_new_tokens=8)
    for r in (json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()):
        assert r["raw"] == ("Yes." if r["score"] >= 0.5 else "No.")
