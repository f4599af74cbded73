"""The record loop that the mini-MIAS and BCDR readers share: an image decoded once, then one lesion
record per annotation row, or healthy records for the boxes drawn in it. A failure is a bad case of
the collector (an error, or skipped with ``--skip-bad``) and gives no record; what differs between
the datasets (their rows, boxes and record fields) comes in through the callables."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..datalist import CaseCollector, make_record

__all__ = ["LesionRow", "case_of_rows", "attempt", "lesion_records", "healthy_records"]

T = TypeVar("T")


@dataclass(frozen=True)
class LesionRow:
    """One annotated lesion: ``file`` and ``case`` name its row in reports; ``describe()`` gives
    ``(box, lesion types, record fields)`` and raises on a bad row."""

    file: str | os.PathLike
    case: str
    patient: str
    describe: Callable[[], tuple[Sequence[int], Sequence[str], dict[str, Any]]]


def case_of_rows(file_name: str, lines: Iterable[int], what: str) -> str:
    """The case of an image in reports: ``"<file> line(s) 3, 4: <what>"``, the rows that list it."""
    return f"{file_name} line(s) {', '.join(str(line) for line in lines)}: {what}"


def attempt(collector: CaseCollector, file: str | os.PathLike, case: str, produce: Callable[[], T]) -> T | None:
    """What ``produce()`` returns (a decoded image, a checked path), or None when it fails: then a
    bad case of ``file``, and the caller skips what depends on it."""
    produced = None
    with collector.case(file, case):
        produced = produce()
    return produced


def lesion_records(
    collector: CaseCollector, image: str | os.PathLike, source: str, rows: Iterable[LesionRow]
) -> list[dict[str, Any]]:
    """One lesion record (label 1) of ``image`` per row, in order; a row whose ``describe()`` fails
    is a bad case and gives none."""
    records = []
    for row in rows:
        with collector.case(row.file, row.case):
            box, types, fields = row.describe()
            records.append(make_record(image, row.patient, 1, box, source, types, **fields))
    return records


def healthy_records(
    collector: CaseCollector, image: str | os.PathLike, case: str, patient: str, source: str,
    boxes: Callable[[], Iterable[Sequence[int]]], fields: Callable[[], dict[str, Any]],
) -> list[dict[str, Any]]:
    """The healthy records (label 0) of ``image``, one per box that ``boxes()`` draws, each with
    the fields of a new ``fields()``; none when either fails (a bad case of ``image``)."""
    records: list[dict[str, Any]] = []
    with collector.case(image, case):
        records.extend(make_record(image, patient, 0, box, source, (), **fields()) for box in boxes())
    return records
