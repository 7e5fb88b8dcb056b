"""Evaluation tasks as data: one YAML file per task under ``medic_ad/eval/tasks/``, plus suites.

A task file::

    name: head_ct                      # the --task name
    kind: detection                    # detection | change | grounding | vqa
    description: Zero-shot anomaly detection, Head CT hemorrhage (dev sample)
    data: head_ct_dev                  # folder; relative paths are under medic_ad.paths.shared_data_dir()
    format: image_folder               # dataset adapter (omit: detected from the layout)
    split: null                        # keep only this split
    options: {}                        # the adapter's own options (e.g. image_mask's blocks)
    prompt: Is there any abnormality in this image?
    column: Head CT                    # column title in the paper-shaped tables
    subset: 0                          # evenly spaced subsample of this size (0: all); --limit overrides
    pairs: {seed: 0}                   # change only: build worsened/improved/no-change pairs from masks
                                       # ({kind: opacity, seed: 0}: synthetic opacities on the images)
    max_new_tokens: 8

A task may render its samples instead of reading a folder: ``format: synthetic`` with
``synthetic: {size: 168, seed: 10007, n: 200}`` draws ``n`` samples of
:class:`~medic_ad.data.synthetic.SyntheticControl` (detection images, change pairs, or lesion
images with masks for grounding); ``subset`` or ``--limit`` render that many instead.

The generic tasks ``detection``, ``change``, ``grounding`` and ``vqa`` have no ``data``: they
need ``--data DIR`` and read any folder an adapter reads. A suite file (``kind: suite``) lists
tables of task names in the paper's layout (``paper.yaml``). Load with :func:`get_task` /
:func:`get_suite`; every YAML here is also loaded by ``tests/training/test_configs.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from medic_ad.yaml_files import read_yaml

__all__ = [
    "KINDS",
    "SuiteSpec",
    "TaskSpec",
    "TASKS_DIR",
    "get_suite",
    "get_task",
    "list_suites",
    "list_tasks",
    "load_task_file",
    "resolve_data_dir",
]

KINDS = ("detection", "change", "grounding", "vqa")
TASKS_DIR = Path(__file__).resolve().parent / "tasks"
DEFAULT_PROMPTS = {
    "detection": "Is there any abnormality in this image?",
    "grounding": "Is there any abnormality in this image?",  # the paper: same query as detection
    "change": None,  # the sample's own question and options, or the MMXU-style question
    "vqa": None,  # the dataset's own question
}
DEFAULT_MAX_NEW_TOKENS = {"detection": 8, "change": 8, "grounding": 0, "vqa": 32}
SYNTHETIC = "synthetic"  # the format of a task whose samples are rendered, not read
SYNTHETIC_KEYS = {"size", "seed", "n", "abnormal_fraction"}
PAIR_KINDS = ("masks", "opacity")  # pairs from lesion masks (ChangePairs) or synthetic opacities (OpacityPairs)


@dataclass(frozen=True)
class TaskSpec:
    """One evaluation task (see the module docstring for the YAML keys)."""

    name: str
    kind: str
    description: str = ""
    data: str | None = None
    format: str | None = None
    split: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    prompt: str | None = None
    column: str | None = None
    subset: int = 0
    pairs: dict[str, Any] | None = None
    max_new_tokens: int | None = None
    answer_type: str = "auto"  # vqa: closed | open | auto (yes/no or options → closed)
    synthetic: dict[str, Any] | None = None  # format synthetic: size, seed, n (and abnormal_fraction)
    source: str | None = None  # the YAML file it came from

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("task needs a non-empty 'name'")
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.answer_type not in ("auto", "closed", "open"):
            raise ValueError(f"task {self.name!r}: answer_type must be auto, closed or open")
        if not isinstance(self.subset, int) or self.subset < 0:
            raise ValueError(f"task {self.name!r}: subset must be an integer ≥ 0")
        if not isinstance(self.options, dict):
            raise ValueError(f"task {self.name!r}: 'options' is a mapping of the adapter's options")
        if self.pairs is not None and (self.kind != "change" or not isinstance(self.pairs, dict)):
            raise ValueError(f"task {self.name!r}: 'pairs' is a mapping and only for change tasks")
        if self.pairs is not None and self.pairs.get("kind", "masks") not in PAIR_KINDS:
            raise ValueError(f"task {self.name!r}: pairs kind must be one of {', '.join(PAIR_KINDS)}")
        if (self.format == SYNTHETIC) != (self.synthetic is not None):
            raise ValueError(f"task {self.name!r}: 'synthetic' (size, seed, n) goes with format synthetic, "
                             "and format synthetic needs it")
        if self.synthetic is not None:
            opts = self.synthetic
            if not isinstance(opts, dict) or not set(opts) <= SYNTHETIC_KEYS:
                raise ValueError(f"task {self.name!r}: 'synthetic' is a mapping of {', '.join(sorted(SYNTHETIC_KEYS))}")
            if self.kind == "vqa":
                raise ValueError(f"task {self.name!r}: the synthetic control has no questions to answer (vqa)")
            if not all(isinstance(opts.get(k, 0), int) for k in ("size", "seed", "n")) or int(opts.get("n", 0)) < 1:
                raise ValueError(f"task {self.name!r}: synthetic size, seed and n are integers, n ≥ 1")

    @property
    def generic(self) -> bool:
        """A task with no data of its own: ``--data`` names the folder."""
        return self.data is None and self.format != SYNTHETIC

    @property
    def title(self) -> str:
        return self.column or self.name

    @property
    def the_prompt(self) -> str | None:
        return self.prompt if self.prompt is not None else DEFAULT_PROMPTS[self.kind]

    @property
    def new_tokens(self) -> int:
        return self.max_new_tokens if self.max_new_tokens is not None else DEFAULT_MAX_NEW_TOKENS[self.kind]

    def with_data(self, data: str | Path | None = None, format: str | None = None,
                  split: str | None = None) -> "TaskSpec":
        """This task pointed at another folder / format / split (``--data``, ``--format``, ``--split``)."""
        changes: dict[str, Any] = {}
        if data is not None:
            changes["data"] = str(Path(data).expanduser().resolve())
            changes["format"] = format  # another folder: its layout is detected unless --format names it
            changes["options"] = {}  # the task's adapter options were for its own folder
        if format is not None:
            changes["format"] = format
        if split is not None:
            changes["split"] = split
        if not changes:
            return self
        if changes.get("format", self.format) != SYNTHETIC:
            changes["synthetic"] = None  # a folder's samples are read, not rendered
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "source"}


@dataclass(frozen=True)
class SuiteSpec:
    """Tables of tasks: ``tables`` maps a table id to ``{"title", "kind", "tasks": [names]}``."""

    name: str
    description: str = ""
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str | None = None

    @property
    def task_names(self) -> list[str]:
        return [t for table in self.tables.values() for t in table["tasks"]]


_TASK_KEYS = {f.name for f in dataclasses.fields(TaskSpec)} - {"source"}


def load_task_file(path: str | Path) -> TaskSpec | SuiteSpec:
    """A :class:`TaskSpec` (or :class:`SuiteSpec` for ``kind: suite``) from a YAML file."""
    path = Path(path)
    data = read_yaml(path, what="task file")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a task file holds a mapping")
    if data.get("kind") == "suite":
        return _suite_from_dict(data, path)
    unknown = sorted(set(data) - _TASK_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown task key(s) {', '.join(unknown)}; known: {', '.join(sorted(_TASK_KEYS))}")
    try:
        return TaskSpec(**data, source=str(path))
    except TypeError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _suite_from_dict(data: dict[str, Any], path: Path) -> SuiteSpec:
    tables = data.get("tables")
    if not isinstance(tables, dict) or not tables:
        raise ValueError(f"{path}: a suite needs 'tables' (table id -> title, kind, tasks)")
    for tid, table in tables.items():
        if not isinstance(table, dict) or table.get("kind") not in KINDS or not isinstance(table.get("tasks"), list):
            raise ValueError(f"{path}: table {tid!r} needs a kind ({', '.join(KINDS)}) and a list of tasks")
        table.setdefault("title", str(tid))
    return SuiteSpec(name=str(data.get("name") or path.stem), description=str(data.get("description", "")),
                     tables=tables, source=str(path))


@lru_cache(maxsize=1)
def _registry() -> tuple[dict[str, TaskSpec], dict[str, SuiteSpec]]:
    tasks: dict[str, TaskSpec] = {}
    suites: dict[str, SuiteSpec] = {}
    for path in sorted(TASKS_DIR.glob("*.yaml")):
        spec = load_task_file(path)
        target = suites if isinstance(spec, SuiteSpec) else tasks
        if spec.name in target:
            raise ValueError(f"{path}: task name {spec.name!r} is defined twice")
        target[spec.name] = spec  # type: ignore[assignment]
    for suite in suites.values():
        missing = [t for t in suite.task_names if t not in tasks]
        if missing:
            raise ValueError(f"{suite.source}: unknown task(s) {', '.join(missing)}")
    return tasks, suites


def list_tasks() -> list[str]:
    return sorted(_registry()[0])


def list_suites() -> list[str]:
    return sorted(_registry()[1])


def get_task(name: str | Path) -> TaskSpec:
    """A registered task by name, or a task YAML file by path."""
    if str(name).endswith((".yaml", ".yml")):
        spec = load_task_file(name)
        if isinstance(spec, SuiteSpec):
            raise ValueError(f"{name}: a suite file, not a task (use --suite)")
        return spec
    tasks = _registry()[0]
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(tasks))}")
    return tasks[name]


def get_suite(name: str | Path) -> SuiteSpec:
    if str(name).endswith((".yaml", ".yml")):
        spec = load_task_file(name)
        if not isinstance(spec, SuiteSpec):
            raise ValueError(f"{name}: a task file, not a suite (use --task)")
        return spec
    suites = _registry()[1]
    if name not in suites:
        raise ValueError(f"unknown suite {name!r}; known suites: {', '.join(sorted(suites))}")
    return suites[name]


def resolve_data_dir(task: TaskSpec, data_root: str | Path | None = None) -> Path:
    """The task's data folder: absolute as written, else under ``data_root`` (default: shared data)."""
    if task.data is None:
        raise ValueError(f"task {task.name!r} has no data of its own; pass --data DIR")
    path = Path(task.data).expanduser()
    if path.is_absolute():
        return path
    if data_root is None:
        from medic_ad.paths import shared_data_dir

        data_root = shared_data_dir()
    return Path(data_root) / path
