"""Every published dataset the Lingshu-7B recipes read, in its released layout, built from the shared real images.

``build_datasets_root(shared, out)`` writes under ``out`` the folders a ``datasets`` root holds
(``BMAD/{BraTS2021,RESC,Liver}``, ``ChestX-Det``, ``SLAKE/Slake1.0``, ``VQA-RAD``, ``PathVQA/pvqa``,
``MIMIC-Diff-VQA``, ``MIMIC-CXR-JPG``, ``MMXU``), a handful of images each: Br35H tumour slices with
their masks stand in for the BMAD and lesion images, Cohen chest X-rays for ChestX-Det and
MIMIC-CXR. Annotation files follow the released formats field for field. ``Layout`` says which
patients are shared between sets, so tests can check that none of the evaluation patients is trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from medic_ad.data.adapters.bmad import in_eval_part

MMXU_SHARED_SUBJECT = "10000032"  # in MMXU test and in MIMIC-Diff-VQA train, as real subjects are
MIMIC_TRAIN_SUBJECTS = ("10000032", "10000764", "10001217")


@dataclass
class Layout:
    root: Path
    bmad_volumes: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # set -> train/test -> volumes
    mmxu_test_subjects: list[str] = field(default_factory=list)
    mimic_train_subjects: list[str] = field(default_factory=list)


def _grey(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    img = Image.open(path).convert("L")
    if size is not None:
        img = img.resize((size[1], size[0]))
    return np.asarray(img)


def _save(arr: np.ndarray, path: Path, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def _volumes(set_name: str, n_train: int, n_test: int) -> dict[str, list[str]]:
    """Volume ids of which the split policy puts ``n_train`` in the training part and ``n_test`` in Table 3."""
    out: dict[str, list[str]] = {"train": [], "test": []}
    k = 0
    while len(out["train"]) < n_train or len(out["test"]) < n_test:
        volume = f"{100 + k:05d}"
        side = "test" if in_eval_part(set_name, volume, 0.5) else "train"
        if len(out[side]) < (n_test if side == "test" else n_train):
            out[side].append(volume)
        k += 1
    return out


def _bmad(shared: Path, root: Path, name: str, style: str, layout: Layout, lesions: list, normals: list) -> None:
    """One pixel-level BMAD set. style: "class_first" (BraTS), "resc" (val/ungood), "liver" (img/label above classes)."""
    base = root / "BMAD" / name
    volumes = _volumes(name, 3, 2)
    layout.bmad_volumes[name] = volumes
    labelled = volumes["train"] + volumes["test"]
    train_volumes = [f"{900 + k:05d}" for k in range(3) if not in_eval_part(name, f"{900 + k:05d}", 0.5)]
    for k, volume in enumerate(train_volumes):  # normal training volumes of their own
        _save(_grey(normals[k % len(normals)]), base / "train/good/img" / f"{volume}_{60 + k}.png")
    val = "val" if style == "resc" else "valid"
    bad = "ungood" if style == "resc" else "Ungood"
    for k, volume in enumerate(labelled):
        folder = val if k % 2 == 0 else "test"
        image, mask = lesions[k % len(lesions)]
        grey = _grey(image)
        lesion = (_grey(mask, grey.shape) > 127).astype(np.uint8) * 255
        normal = _grey(normals[(k + 3) % len(normals)])
        for cls, img, msk, idx in ((bad, grey, lesion, 70), ("good", normal, np.zeros_like(normal), 20)):
            file = f"{volume}_{idx}.png"
            if style == "liver":
                _save(img, base / folder / "img" / cls / file)
                _save(msk, base / folder / "label" / cls / file)
            else:
                _save(img, base / folder / cls / "img" / file)
                _save(msk, base / folder / cls / "label" / file)


def _chestx_det(shared: Path, root: Path, xrays: list[Path]) -> None:
    base = root / "ChestX-Det"
    records: dict[str, list] = {"train": [], "test": []}
    for k, path in enumerate(xrays[:6]):
        split = "test" if k >= 4 else "train"
        grey = _grey(path)
        h, w = grey.shape
        name = f"{36199 + k}.png"
        _save(grey, base / split / name)
        if k % 2 == 0:
            x1, y1, x2, y2 = w // 4, h // 3, w // 2, h // 2
            records[split].append({"file_name": name, "syms": ["Effusion"], "boxes": [[x1, y1, x2, y2]],
                                   "polygons": [[[x1, y1], [x2, y1], [x2, y2], [x1, y2]]]})
        else:
            records[split].append({"file_name": name, "syms": [], "boxes": [], "polygons": []})
    for split, recs in records.items():
        (base / f"ChestX_Det_{split}.json").write_text(json.dumps(recs))


def _slake(root: Path, images: list[Path]) -> None:
    base = root / "SLAKE" / "Slake1.0"
    records: dict[str, list] = {"train.json": [], "validate.json": [], "test.json": []}
    for k, path in enumerate(images[:4]):
        folder = f"xmlab{k}"
        _save(np.stack([_grey(path)] * 3, -1), base / "imgs" / folder / "source.jpg", "JPEG")
        file = "test.json" if k == 3 else "validate.json" if k == 2 else "train.json"
        for j, (q, a, kind) in enumerate((("Is the brain healthy?", "No", "CLOSED"),
                                          ("What modality is used?", "MRI", "OPEN"))):
            records[file].append({"img_id": k, "img_name": f"{folder}/source.jpg", "question": q, "answer": a,
                                  "q_lang": "en", "location": "Brain", "modality": "MRI", "answer_type": kind,
                                  "base_type": "vqa", "content_type": "Modality", "triple": ["vhead", "_", "_"],
                                  "qid": 10 * k + j})
    for file, recs in records.items():
        (base / file).write_text(json.dumps(recs))


def _vqa_rad(root: Path, images: list[Path]) -> None:
    base = root / "VQA-RAD"
    records = []
    for k, path in enumerate(images[:3]):
        name = f"synpic{54610 + k}.jpg"
        _save(_grey(path), base / "VQA_RAD Image Folder" / name, "JPEG")
        records.append({"qid": k, "phrase_type": "test_freeform" if k == 2 else "freeform", "image_name": name,
                        "image_organ": "HEAD", "question": "Is there a mass?", "question_type": "PRES",
                        "answer": "Yes", "answer_type": "CLOSED", "evaluation": "not evaluated"})
    (base / "VQA_RAD Dataset Public.json").write_text(json.dumps(records))


def _pathvqa(root: Path, images: list[Path]) -> None:
    base = root / "PathVQA" / "pvqa"
    for split, paths in (("train", images[:3]), ("test", images[3:4])):
        recs = []
        for k, path in enumerate(paths):
            name = f"{split}_{k:04d}"
            _save(np.stack([_grey(path)] * 3, -1), base / "images" / split / f"{name}.jpg", "JPEG")
            recs.append({"image": name, "question": "Is this tissue abnormal?", "answer": "yes"})
        path = base / "qas" / split / f"{split}_qa.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(recs))


def _mimic(root: Path, xrays: list[Path], layout: Layout) -> None:
    """MIMIC-CXR-JPG files, Medical-Diff-VQA's two CSVs, and MMXU-test.jsonl as released."""
    cxr = root / "MIMIC-CXR-JPG"
    studies = []
    k = 0
    for subject in MIMIC_TRAIN_SUBJECTS:
        for order in (1, 2):
            study = f"5{subject[-4:]}{order:03d}"
            dicom = f"{k:08x}-bde0afdd-112c0b34-7bc16630-4e384014"
            _save(_grey(xrays[k % len(xrays)]), cxr / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
                  / f"{dicom}.jpg", "JPEG")
            studies.append((subject, study, dicom, order))
            k += 1
    diff = root / "MIMIC-Diff-VQA"
    diff.mkdir(parents=True, exist_ok=True)
    rows = ["subject_id,study_id,dicom_id,view,split,study_date,study_order"]
    rows += [f"{s},{st},{d},postero-anterior,train,2180050{o},{o}" for s, st, d, o in studies]
    (diff / "mimic_all.csv").write_text("\n".join(rows) + "\n")
    answers = ('"the main image has an additional finding of pneumothorax than the reference image."',
               '"the main image is missing the finding of pleural effusion than the reference image."',
               "nothing has changed.")
    q = ["study_id,subject_id,ref_id,question_type,question,answer,split"]
    for n, subject in enumerate(MIMIC_TRAIN_SUBJECTS):
        prior, main = [st for s, st, _, _ in studies if s == subject]
        q.append(f"{main},{subject},{prior},difference,what has changed compared to the reference image?,"
                 f"{answers[n]},train")
        q.append(f"{main},{subject},{prior},abnormality,what abnormalities are seen in this image?,atelectasis,train")
    (diff / "mimic_pair_questions.csv").write_text("\n".join(q) + "\n")
    layout.mimic_train_subjects = list(MIMIC_TRAIN_SUBJECTS)

    subject = MMXU_SHARED_SUBJECT
    (prior_study, prior_dicom), (cur_study, cur_dicom) = [(st, d) for s, st, d, _ in studies if s == subject]

    def path(study: str, dicom: str) -> str:
        return f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"

    mmxu = root / "MMXU"
    mmxu.mkdir(parents=True, exist_ok=True)
    options = {"A": "No significant change", "B": "Improved", "C": "Worsened"}
    recs = [{"id": i, "content_type": ct, "question": "What is the condition of the left lower lung zone across the "
             "two chest CXR images?", "options": options, "answer": letter,
             "cur_image_path": path(cur_study, cur_dicom), "prior_image_path": path(prior_study, prior_dicom)}
            for i, (ct, letter) in enumerate((("worsened", "C"), ("improved", "B"), ("no change", "A")))]
    (mmxu / "MMXU-test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    layout.mmxu_test_subjects = [subject]


def build_datasets_root(shared: Path, out: Path) -> Layout:
    """Write every published layout under ``out`` (see the module docstring)."""
    masks = shared / "br35h_masks"
    lesions = [(masks / "images" / f"y{k}.png", masks / "masks" / f"y{k}.png") for k in range(1, 12)
               if (masks / "images" / f"y{k}.png").is_file()][:5]
    normals = sorted((shared / "br35h" / "no").glob("*.png"))[:6]
    xrays = sorted((shared / "cxr_pairs" / "images").glob("*.png"))[:6]
    layout = Layout(root=out)
    _bmad(shared, out, "BraTS2021", "class_first", layout, lesions, normals)
    _bmad(shared, out, "RESC", "resc", layout, lesions, normals)
    _bmad(shared, out, "Liver", "liver", layout, lesions, normals)
    _chestx_det(shared, out, xrays)
    _slake(out, [p for p, _ in lesions] + normals)
    _vqa_rad(out, normals)
    _pathvqa(out, [p for p, _ in lesions])
    _mimic(out, xrays, layout)
    return layout
