"""Datalists: one JSON file per dataset and task, one record per patch, split by patient.

Record fields (``label`` 1 = lesion, 0 = healthy; ``box`` = square patch box ``[x0, y0, x1, y1]``,
x = column, y = row, max exclusive)::

    {"image": "AllDICOMs/x.dcm", "patient_id": "...", "label": 1, "lesion_types": ["mass"],
     "box": [x0, y0, x1, y1], "density": 2, "birads": "4a", "laterality": "L", "view": "CC",
     "source": "inbreast"}

Image paths are stored relative to the datalist file and resolved against it on loading.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_bytes

__all__ = [
    "SUBSETS",
    "TASKS",
    "LESION_TYPES",
    "BadCase",
    "CaseError",
    "DatalistError",
    "CaseCollector",
    "make_record",
    "image_rng",
    "split_patients",
    "read_split_file",
    "assemble_datalist",
    "write_datalist",
    "load_datalist",
    "datalist_records",
    "PHANTOM_MARKER",
    "is_phantom_root",
    "SYNTHETIC_DATALIST",
    "HEALTHY_RESERVE",
    "DEFAULT_RESERVE_PER_IMAGE",
    "TRAINING_COUNTS_FILE",
    "write_training_counts",
    "read_training_counts",
    "trained_on_phantom",
]

logger = logging.getLogger(__name__)

SUBSETS = ("training", "validation", "test")
TASKS = ("all", "mass")
LESION_TYPES = ("mass", "calcification", "distortion", "asymmetry", "adenopathy", "other")
#: the file a phantom dataset root carries; readers mark datalists built from it ``"phantom": true``
PHANTOM_MARKER = "PHANTOM_README.txt"
# The file name of the datalist that every generator's inference writes beside its PNGs.
SYNTHETIC_DATALIST = "synthetic_datalist.json"
#: the datalist key of the spare healthy boxes that class balancing takes (see mammoshare.readers.reserve)
HEALTHY_RESERVE = "healthy_reserve"
#: spare healthy boxes per healthy training image in that reserve (enough for the study's added lesions)
DEFAULT_RESERVE_PER_IMAGE = 50
#: the file a training run writes into its output folder: what it trained on, counted (and, for the
#: classifier, its best validation score, added by mammoshare.classifier.handlers.BestValidationWriter)
TRAINING_COUNTS_FILE = "training_counts.json"
_SUBSET_ALIASES = {
    "training": "training", "train": "training",
    "validation": "validation", "val": "validation", "valid": "validation",
    "test": "test", "testing": "test",
}
REQUIRED_RECORD_KEYS = ("image", "patient_id", "label", "box")


@dataclass
class BadCase:
    """A case that could not be turned into records: the file, the case and the problem."""

    file: str
    case: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file} [{self.case}]: {self.problem}"


class CaseError(ValueError):
    """A problem with one case of a dataset (a file, a CSV row, an ROI); names the file and the case."""

    def __init__(self, file: str | os.PathLike, case: str, problem: str):
        self.file, self.case, self.problem = str(file), str(case), problem
        super().__init__(f"{self.file} [{self.case}]: {problem}")


class DatalistError(ValueError):
    """A datalist that cannot be built or read; holds every bad case found."""

    def __init__(self, message: str, bad_cases: list[BadCase] | None = None):
        self.bad_cases = list(bad_cases or [])
        if self.bad_cases:
            message += "\n" + "\n".join(f"  - {case}" for case in self.bad_cases)
        super().__init__(message)


class CaseCollector:
    """Collects bad cases while a reader goes through a dataset.

    ``with collector.case(file, case_id): ...`` turns any error of that case into a :class:`BadCase`
    and goes on with the next case; :meth:`finish` then raises a :class:`DatalistError` listing all of
    them, unless ``skip_bad`` is set, in which case they are kept in ``bad_cases`` for the report.
    :meth:`note` reports a case that gives no record by the dataset's own definition (e.g. a lesion
    without a location): logged and kept in ``notes``, never an error.
    """

    def __init__(self, skip_bad: bool = False):
        self.skip_bad = skip_bad
        self.bad_cases: list[BadCase] = []
        self.notes: list[BadCase] = []

    @contextlib.contextmanager
    def case(self, file: str | os.PathLike, case_id: str) -> Iterator[None]:
        try:
            yield
        except CaseError as e:
            self.bad_cases.append(BadCase(e.file, e.case, e.problem))
        except (ValueError, KeyError, OSError, IndexError) as e:
            problem = str(e)
            # errors of the transforms already name their file; do not repeat it
            if problem.startswith(str(file)):
                problem = problem[len(str(file)) :].lstrip(": ")
            self.bad_cases.append(BadCase(str(file), str(case_id), problem or type(e).__name__))

    def add(self, file: str | os.PathLike, case_id: str, problem: str) -> None:
        self.bad_cases.append(BadCase(str(file), str(case_id), problem))

    def note(self, file: str | os.PathLike, case_id: str, message: str) -> None:
        note = BadCase(str(file), str(case_id), message)
        self.notes.append(note)
        logger.warning("not used: %s", note)

    def finish(self, what: str) -> list[BadCase]:
        if self.bad_cases and not self.skip_bad:
            raise DatalistError(
                f"{what}: {len(self.bad_cases)} bad case(s); fix them, or pass --skip-bad to skip them "
                "(they are then listed in a .skipped.json file beside the datalist)",
                self.bad_cases,
            )
        for case in self.bad_cases:
            logger.warning("skipped %s", case)
        return self.bad_cases


def make_record(
    image: str | os.PathLike,
    patient_id: str,
    label: int,
    box: list[int] | None,
    source: str,
    lesion_types: Iterable[str] = (),
    density: int | None = None,
    birads: str | None = None,
    laterality: str | None = None,
    view: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One datalist record; ``label`` 1 = lesion, 0 = healthy; ``box`` None = the whole image
    (synthetic patches)."""
    types = sorted(set(lesion_types))
    unknown = [t for t in types if t not in LESION_TYPES]
    if unknown:
        raise ValueError(f"unknown lesion type(s) {unknown}; known: {list(LESION_TYPES)}")
    if label not in (0, 1):
        raise ValueError(f"label must be 0 (healthy) or 1 (lesion), got {label!r}")
    record = {
        "image": str(image),
        "patient_id": str(patient_id),
        "label": int(label),
        "lesion_types": types,
        "box": None if box is None else [int(v) for v in box],
        "density": None if density is None else int(density),
        "birads": None if birads in (None, "") else str(birads),
        "laterality": laterality or None,
        "view": view or None,
        "source": source,
    }
    record.update(extra)
    return record


def image_rng(seed: int, *names: str) -> np.random.RandomState:
    """A random state for one image, from the global seed and the image's name: the boxes of an
    image do not depend on the order in which images are read."""
    key = zlib.crc32("/".join(names).encode()) ^ (int(seed) & 0xFFFFFFFF)
    return np.random.RandomState(key & 0xFFFFFFFF)


def _density_key(value: Any) -> str:
    return "unknown" if value is None else str(value)


def split_patients(
    records: list[dict], seed: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> dict[str, str]:
    """Patient-level split, stratified by label and breast density; deterministic for a seed.

    A patient's stratum is (has a lesion record, most common density). Patients are shuffled with
    the seed inside each stratum, strata are laid one after the other, and the sequence is dealt to
    the subsets by largest remainder, so each stratum is spread ~``fractions`` over training,
    validation and test, and small strata carry their remainder to the next.

    Returns:
        ``{patient_id: subset}``.
    """
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    by_patient: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_patient[r["patient_id"]].append(r)
    strata: dict[tuple[int, str], list[str]] = defaultdict(list)
    for patient, recs in sorted(by_patient.items()):
        label = int(any(r["label"] == 1 for r in recs))
        densities = Counter(_density_key(r.get("density")) for r in recs)
        density = sorted(densities.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        strata[(label, density)].append(patient)
    rng = np.random.RandomState(int(seed) & 0xFFFFFFFF)
    order: list[str] = []
    for key in sorted(strata):
        patients = strata[key]
        order.extend(patients[i] for i in rng.permutation(len(patients)))
    counts = np.zeros(3)
    assignment: dict[str, str] = {}
    for i, patient in enumerate(order, start=1):
        deficit = i * np.asarray(fractions) - counts
        subset = int(np.argmax(deficit))
        counts[subset] += 1
        assignment[patient] = SUBSETS[subset]
    return assignment


def read_split_file(path: str | os.PathLike) -> dict[str, str]:
    """An external split: JSON ``{patient_id: subset}`` (or ``{subset: [patient_ids]}``) or CSV with
    columns ``patient_id`` and ``subset``. Subsets: training/train, validation/val, test."""
    path = Path(path)
    if not path.is_file():
        raise DatalistError(f"{path}: split file not found")
    raw: dict[str, str] = {}
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise DatalistError(f"{path}: a JSON object is expected")
        for key, value in data.items():
            if isinstance(value, list):
                raw.update({str(p): key for p in value})
            else:
                raw[str(key)] = str(value)
    else:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = {"patient_id", "subset"} - set(reader.fieldnames or [])
            if missing:
                raise DatalistError(f"{path}: CSV without the column(s) {sorted(missing)}; expected patient_id,subset")
            for row in reader:
                raw[row["patient_id"].strip()] = row["subset"].strip()
    split = {}
    for patient, subset in raw.items():
        if subset.lower() not in _SUBSET_ALIASES:
            raise DatalistError(f"{path}: patient {patient} has unknown subset {subset!r}; use training, validation or test")
        split[patient] = _SUBSET_ALIASES[subset.lower()]
    return split


def assemble_datalist(
    records: list[dict],
    dataset: str,
    task: str,
    seed: int,
    phantom: bool,
    split: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Split records by patient (the seeded stratified split, or ``split``) into a datalist dict."""
    if not records:
        raise DatalistError(f"{dataset} ({task}): no records; the dataset has no usable case for this task")
    if task not in TASKS:
        raise DatalistError(f"unknown task {task!r}; use one of {list(TASKS)}")
    if split is None:
        split = split_patients(records, seed)
    else:
        missing = sorted({r["patient_id"] for r in records} - set(split))
        if missing:
            raise DatalistError(
                f"the split file has no subset for {len(missing)} patient(s): {', '.join(missing[:20])}"
                + (" ..." if len(missing) > 20 else "")
            )
    datalist: dict[str, Any] = {"dataset": dataset, "task": task, "phantom": bool(phantom), "seed": int(seed)}
    datalist.update(extra)
    for subset in SUBSETS:
        datalist[subset] = [r for r in records if split[r["patient_id"]] == subset]
    return datalist


def write_datalist(datalist: dict[str, Any], out: str | os.PathLike, bad_cases: list[BadCase] = ()) -> Path:
    """Write the datalist JSON with image paths relative to its folder; skipped cases, if any, go
    to ``<name>.skipped.json`` beside it."""
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    data = dict(datalist)
    for subset in SUBSETS + ((HEALTHY_RESERVE,) if HEALTHY_RESERVE in datalist else ()):
        data[subset] = [
            {**r, "image": Path(os.path.relpath(Path(r["image"]).absolute(), out.parent)).as_posix()}
            for r in datalist.get(subset, [])
        ]
    out.write_text(json.dumps(data, indent=1) + "\n")
    skipped = out.with_name(out.stem + ".skipped.json")
    if bad_cases:
        skipped.write_text(json.dumps([asdict(c) for c in bad_cases], indent=1) + "\n")
    elif skipped.exists():
        skipped.unlink()  # a stale list from an earlier build would mislead
    return out


def load_datalist(path: str | os.PathLike) -> dict[str, Any]:
    """Read a datalist JSON and resolve image paths to absolute paths; checks its structure."""
    path = Path(path)
    if not path.is_file():
        raise DatalistError(f"{path}: datalist not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatalistError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or not any(s in data for s in SUBSETS):
        raise DatalistError(f"{path}: a datalist object with 'training', 'validation' and 'test' lists is expected")
    base = path.absolute().parent
    for subset in SUBSETS + ((HEALTHY_RESERVE,) if HEALTHY_RESERVE in data else ()):
        records = data.setdefault(subset, [])
        for i, record in enumerate(records):
            missing = [k for k in REQUIRED_RECORD_KEYS if k not in record]
            if missing:
                raise DatalistError(f"{path}: {subset}[{i}] lacks {missing}")
            image = Path(record["image"])
            record["image"] = os.path.normpath(image if image.is_absolute() else (base / image))
    return data


def datalist_records(datalist: dict[str, Any], subsets: Iterable[str] = SUBSETS) -> list[dict]:
    """All records of the given subsets, in order."""
    return [r for s in subsets for r in datalist.get(s, [])]


def is_phantom_root(root: str | os.PathLike) -> bool:
    """True when a dataset folder is one that ``mammoshare phantom`` wrote."""
    return (Path(root) / PHANTOM_MARKER).is_file()


def write_training_counts(output_dir: str | os.PathLike, counts: dict[str, Any], update: bool = False) -> Path:
    """Write what a training run trains on (``counts``: JSON-ready) to ``output_dir/``
    :data:`TRAINING_COUNTS_FILE`, atomically; returns the path. With ``update`` the keys of
    ``counts`` are added to (or replace) those the file holds, as the run learns more about itself."""
    path = Path(output_dir) / TRAINING_COUNTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if update and path.is_file():
        counts = {**read_training_counts(output_dir), **counts}
    return atomic_write_bytes(path, (json.dumps(counts, indent=1, sort_keys=True) + "\n").encode())


def trained_on_phantom(weights_path: str | os.PathLike) -> bool:
    """Whether the run that wrote ``weights_path`` trained on phantom data, by the training counts in
    its folder (or the folder above, for ``snapshots/``); False when there are none to say so."""
    folder = Path(weights_path).parent
    for candidate in (folder, folder.parent) if folder.name == "snapshots" else (folder,):
        path = candidate / TRAINING_COUNTS_FILE
        if path.is_file():
            try:
                return json.loads(path.read_text()).get("phantom") is True
            except (OSError, ValueError, AttributeError):
                return False
    return False


def read_training_counts(output_dir: str | os.PathLike) -> dict[str, Any]:
    """The counts a training run wrote with :func:`write_training_counts` into ``output_dir``."""
    path = Path(output_dir) / TRAINING_COUNTS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatalistError(f"{path}: the training run wrote no readable counts of its training data ({e})") from e
