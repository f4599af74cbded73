"""The study runner: the paper's experiment matrix (Tables 1 and 2) in one command.

``mammoshare study --preset {demo,paper} --out DIR ...`` (:func:`add_study_parser`) or
:func:`run_study`. Modules: :mod:`.presets` (rows, tasks, presets), :mod:`.inputs` (datasets,
generator files, demo phantom and OPTIMAM-layout generator), :mod:`.runner` (plan and run, resume,
GPU workers), :mod:`.stages` (stage records, hashes, logs), :mod:`.kinds` (what each stage runs),
:mod:`.execute` (one stage run and recorded),
:mod:`.tables` (aggregation and formatting), :mod:`.report` (runs.json, plot, report.md),
:mod:`.worker` (the GPU worker process).
"""

from .cli import add_study_parser
from .presets import DEMO, PAPER, PRESETS, ROWS
from .runner import StudyOptions, StudyResult, plan_study, run_study

__all__ = ["add_study_parser", "run_study", "plan_study", "StudyOptions", "StudyResult", "PRESETS", "ROWS", "DEMO", "PAPER"]
