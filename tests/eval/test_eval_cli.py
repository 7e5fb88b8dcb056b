"""Real tiny models through the harness and the CLI: baselines, suite, re-scoring, ablations, bad input."""

from __future__ import annotations

import json
import shutil

import pytest


def _one_error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip() and not x.startswith("[eval]")]
    assert len(lines) == 1, err
    assert lines[0].startswith("medic-ad: error: ") and "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------------------------------------- models


def test_load_eval_model_decides_by_folder(tiny_checkpoint, bare_backbone, tmp_path):
    from medic_ad.models.baseline import BaselineVLM
    from medic_ad.eval.models import load_eval_model, model_kind
    from medic_ad.models.medic_ad import MedicAD

    assert isinstance(load_eval_model(tiny_checkpoint), MedicAD)
    bare = load_eval_model(bare_backbone)
    assert isinstance(bare, BaselineVLM)
    assert bare.processor.num_ano_tokens == 0 and bare.processor.num_diff_tokens == 0
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="neither a MEDIC-AD checkpoint nor a Qwen2.5-VL model.*'bert'"):
        model_kind(other)
    with pytest.raises(ValueError, match="neither a MEDIC-AD checkpoint"):
        model_kind(tmp_path)
    with pytest.raises(FileNotFoundError):
        model_kind(tmp_path / "nowhere")


def test_baseline_has_the_detect_compare_interface(bare_backbone, image_folder):
    from medic_ad.models.baseline import BaselineVLM

    model = BaselineVLM.from_pretrained(bare_backbone)
    images = sorted(image_folder.rglob("*.png"))[:3]
    results = model.detect(images, max_new_tokens=2, batch_size=2)
    assert len(results) == 3
    for r in results:
        assert 0.0 <= r.score <= 1.0 and r.abnormal == (r.score >= 0.5) and isinstance(r.answer, str)
    c = model.compare(images[0], images[1], max_new_tokens=1)
    assert c.label in ("worsened", "improved", "no change") and sum(c.probs.values()) == pytest.approx(1.0)
    # no <Ano>/<Diff> tokens reach the bare backbone
    from medic_ad.data.templates import ChatExample
    from PIL import Image

    batch = model.prepare([ChatExample([Image.open(images[0]), Image.open(images[1])], "q")])
    ids = batch["input_ids"][0].tolist()
    assert model.processor.ano_token_id not in ids and model.processor.diff_token_id not in ids


def test_baseline_and_medic_ad_rows_side_by_side(tiny_checkpoint, bare_backbone, image_folder, mask_folder, tmp_path):
    from medic_ad.eval.models import resolve_models
    from medic_ad.eval.suite import evaluate
    from medic_ad.eval.tasks import get_task

    models = resolve_models([str(tiny_checkpoint), f"qwen={bare_backbone}"])
    tasks = [get_task("detection").with_data(image_folder), get_task("grounding").with_data(mask_folder)]
    res = evaluate(models, tasks, tmp_path / "out", limit=4, batch_size=4, max_new_tokens=1, progress=False,
                   published=False)
    assert set(res["results"]["detection"]) == {"tiny", "qwen"}
    assert set(res["results"]["grounding"]) == {"tiny"}
    assert any(s["model"] == "qwen" and "heatmap" in s["reason"] for s in res["skipped"])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| tiny |" in md and "| qwen |" in md
    assert (tmp_path / "out" / "predictions" / "qwen" / "detection.jsonl").is_file()
    assert (tmp_path / "out" / "figures" / "roc_detection.png").stat().st_size > 1000


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_head_ct_end_to_end_then_rescore_and_compare(eval_cli, tiny_checkpoint, bare_backbone, shared_data,
                                                         tmp_path):
    data = shared_data / "head_ct_dev"
    if not data.is_dir():
        pytest.skip(f"{data} is absent")
    out = tmp_path / "run"
    code, stdout, err = eval_cli("eval", "--model", tiny_checkpoint, "--model", f"qwen={bare_backbone}",
                                 "--task", "head_ct", "--data", data, "--out", out, "--limit", "6",
                                 "--batch-size", "3", "--max-new-tokens", "2")
    assert code == 0, err
    assert "| model | Head CT P | R | F1 | Avg F1 |" in stdout
    assert "Lingshu-7B *(published)*" in stdout and "| qwen |" in stdout
    results = json.loads((out / "results.json").read_text())
    m = results["results"]["head_ct"]["tiny"]
    assert m["n"] == 6 and m["n_abnormal"] == 3 and 0 <= m["f1"] <= 1 and m["auroc"] is not None
    for name in ("roc_head_ct.png", "confusion_head_ct_tiny.png", "confusion_head_ct_qwen.png"):
        assert (out / "figures" / name).stat().st_size > 1000
    assert "figures/roc_head_ct.png" in (out / "report.md").read_text()
    preds = out / "predictions" / "tiny" / "head_ct.jsonl"
    assert len(preds.read_text().splitlines()) == 6

    # re-running resumes: nothing new is predicted
    code, _, err = eval_cli("eval", "--model", tiny_checkpoint, "--task", "head_ct", "--data", data, "--out", out,
                            "--limit", "6", "--max-new-tokens", "2")
    assert code == 0 and "resumed 6" in err
    # ... and other decoding settings are refused instead of mixed into the same file
    code, _, err = eval_cli("eval", "--model", tiny_checkpoint, "--task", "head_ct", "--data", data, "--out", out,
                            "--limit", "6", "--max-new-tokens", "4")
    assert code == 2 and "other settings (max_new_tokens 2 → 4)" in _one_error_line(err)

    # re-score by the score instead of the text, and through --rescore
    code, stdout, err = eval_cli("eval", "score", preds, "--decision", "score", "--json")
    assert code == 0, err
    rescored = json.loads(stdout)["results"]["head_ct"]["tiny"]
    assert rescored["decision"] == "score" and rescored["auroc"] == pytest.approx(m["auroc"])
    code, stdout, _ = eval_cli("eval", "--rescore", preds, "--no-published")
    assert code == 0 and "| tiny |" in stdout

    # two runs side by side
    other = tmp_path / "run2"
    shutil.copytree(out, other)
    code, stdout, err = eval_cli("eval", "compare", out / "results.json", other / "results.json",
                                 "--out", tmp_path / "cmp")
    assert code == 0, err
    assert "| tiny (run2) |" in stdout and (tmp_path / "cmp" / "report.md").is_file()


def test_cli_suite_paper(eval_cli, tiny_checkpoint, shared_data, tmp_path):
    out = tmp_path / "suite"
    code, stdout, err = eval_cli("eval", "--model", tiny_checkpoint, "--suite", "paper", "--data-root", shared_data,
                                 "--limit", "2", "--out", out, "--max-new-tokens", "1")
    assert code == 0, err
    for title in ("Table 1: zero-shot anomaly detection", "Table 2: symptom tracking",
                  "Table 3: visual explainability"):
        assert title in stdout
    results = json.loads((out / "results.json").read_text())
    assert {"brain_mri", "head_ct", "br35h", "covid_cxr"} <= set(results["results"])
    assert {"br35h_masks", "figshare", "br35h_mask_pairs"} <= set(results["results"])
    skipped = {s["task"]: s["reason"] for s in results["skipped"]}
    assert "does not exist" in skipped["mmxu"]
    report = (out / "report.md").read_text()
    assert "## Skipped" in report and "mmxu" in report
    assert "**MMXU** (not run here; published rows only)" in report


def test_cli_ablate(eval_cli, image_folder, tmp_path):
    from medic_ad.models.medic_ad import MedicAD

    variants = {"full": {}, "nomod": {"modulate": False}, "last": {"multi_scale": False}, "pool2": {"pool_size": 2},
                "sp4": {"num_soft_prompts": 4}}
    args = []
    for name, kw in variants.items():
        MedicAD.tiny(0, **kw).save_pretrained(tmp_path / name)
        args += ["--model", f"{name}={tmp_path / name}"]
    out = tmp_path / "abl"
    code, stdout, err = eval_cli("eval", "ablate", *args, "--task", "detection", "--data", image_folder,
                                 "--limit", "2", "--out", out, "--reference", "full",
                                 "--max-new-tokens", "1")
    assert code == 0, err
    for label in ("w/o <Ano> modulation", "last-layer features", "pooling 2×2", "4 soft prompts"):
        assert label in stdout
    rows = json.loads((out / "ablation.json").read_text())["rows"]
    assert [r["model"] for r in rows] == list(variants) and rows[0]["reference"]
    assert all(r["avg_f1"] is not None for r in rows)
    assert (out / "figures" / "sensitivity_pool_size.png").is_file()
    assert (out / "figures" / "sensitivity_num_soft_prompts.png").is_file()


def test_cli_tasks(eval_cli):
    code, stdout, _ = eval_cli("eval", "tasks")
    assert code == 0 and "head_ct" in stdout and "suite paper" in stdout


@pytest.mark.parametrize("case", ["not_a_model", "bert_model", "empty_data", "unknown_task", "generic_no_data",
                                  "other_task_file", "results_as_predictions", "suite_and_data", "bad_limit"])
def test_cli_bad_input_is_one_line_exit_2(case, eval_cli, tiny_checkpoint, image_folder, tmp_path, dummy):
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = {
        "not_a_model": ["--model", empty, "--task", "detection", "--data", image_folder],
        "unknown_task": ["--model", tiny_checkpoint, "--task", "nope"],
        "generic_no_data": ["--model", tiny_checkpoint, "--task", "detection"],
        "empty_data": ["--model", tiny_checkpoint, "--task", "detection", "--data", empty],
        "suite_and_data": ["--model", tiny_checkpoint, "--suite", "paper", "--data", image_folder],
        "bad_limit": ["--model", tiny_checkpoint, "--task", "detection", "--data", image_folder, "--limit", "0"],
    }
    expected = {"not_a_model": "neither a MEDIC-AD checkpoint", "bert_model": "model_type 'bert'",
                "empty_data": "unknown layout", "unknown_task": "unknown task 'nope'",
                "generic_no_data": "pass --data DIR", "other_task_file": "not 'head_ct'",
                "results_as_predictions": "not a predictions file", "suite_and_data": "--data",
                "bad_limit": "--limit must be"}
    if case == "bert_model":
        (empty / "config.json").write_text('{"model_type": "bert"}')
        argv[case] = ["--model", empty, "--task", "detection", "--data", image_folder]
    if case in ("other_task_file", "results_as_predictions"):
        from medic_ad.eval.predict import predict_task
        from medic_ad.eval.samples import load_task_samples
        from medic_ad.eval.tasks import get_task

        task = get_task("detection").with_data(image_folder)
        preds = tmp_path / "p.jsonl"
        predict_task(dummy(), task, load_task_samples(task).samples[:2], preds, model_name="d", progress=False)
        if case == "other_task_file":
            argv[case] = ["score", preds, "--task", "head_ct"]
        else:
            results = tmp_path / "results.json"
            results.write_text(json.dumps({"models": {}, "tasks": {}, "results": {}}, indent=2))
            argv[case] = ["score", results]
    code, _, err = eval_cli("eval", *argv[case])
    assert code == 2
    assert expected[case] in _one_error_line(err)


def test_row_names_are_unique(tmp_path):
    from medic_ad.eval.models import parse_model_arg, unique_names

    a, b = tmp_path / "runA" / "final", tmp_path / "runB" / "final"
    assert unique_names([a, b], [None, None]) == ["runA-final", "runB-final"]
    assert unique_names([a, b], ["x", "x"]) == ["x", "x-2"]
    assert parse_model_arg("qwen=/models/q") == ("qwen", __import__("pathlib").Path("/models/q"))
    assert parse_model_arg("/models/q")[0] is None
