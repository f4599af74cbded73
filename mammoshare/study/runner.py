"""Plan and run a study: the stages and cells of the experiment matrix, reused when done.

Folder layout of a study (``--out DIR``)::

    DIR/inputs/                    demo phantom data, the demo OPTIMAM-layout generator
    DIR/stages/datalists/<id>/     centre A and BCDR datalists per task
    DIR/stages/gans/<id>/          DCGAN / WGAN-GP trainings per task (run/model.pt, snapshots)
    DIR/stages/synthetic/<id>/     synthetic sets per generator (patches/synthetic_datalist.json)
    DIR/stages/audits/<id>/        privacy and quality audit per trained generator (audit/audit.json, audit.md)
    DIR/cells/<id>/                one classifier training + evaluation per cell
    DIR/table1_all_lesions.{md,csv}, DIR/table2_masses.{md,csv}, DIR/paired_comparison.{md,csv},
    DIR/deltas_vs_none.png, DIR/runs.json, DIR/report.md

Each stage folder holds ``stage.json`` (config, hash, status, outputs, timings, error) and
``log.txt``. Stages run in dependency order: datalists, GAN trainings, synthetic sets, audits, cells. Cells
are independent: with several CUDA GPUs each runs in a worker process pinned to one GPU with
``CUDA_VISIBLE_DEVICES`` (so are the GAN trainings); otherwise everything runs in this process.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..datalist import SYNTHETIC_DATALIST
from ..hashing import sha256_file
from .inputs import OPTIMAM_BUNDLE, StudyInputs, parse_bcdr_generators, resolve_inputs
from .kinds import AUDIT_SUBDIR, DATALIST_FILE, METRICS_FILE, SYNTHETIC_SUBDIR
from .presets import CLASSIFIERS, FRACTIONS, GENERATORS, PRESETS, ROWS, TASKS, Preset, Row, fraction_label, row_by_key
from .execute import execute_spec
from .stages import config_hash, read_record, record_is_reusable, stage_dir, write_json_atomically

__all__ = ["StudyOptions", "StudyResult", "Plan", "plan_study", "run_study", "default_bundles_dir", "detect_gpus",
           "execute_stages", "run_in_worker"]

logger = logging.getLogger(__name__)

NOT_SELECTED = "not selected in this run (--only / --tasks / --classifiers / --fractions)"
PHASES = ("datalist", "gan", "synthetic", "audit", "cell")


#: the bundles a study needs in its bundles folder
STUDY_BUNDLES = ("classifier_inbreast", "dcgan_bcdr", "wgangp_bcdr", "ddpm_bcdr")


def _holds_bundles(folder: Path) -> bool:
    return all((folder / bundle / "configs").is_dir() for bundle in STUDY_BUNDLES)


def default_bundles_dir(cwd: Path | None = None) -> Path:
    """The folder of the bundles when ``--bundles`` is not given: ``bundles/`` of the current
    folder, else of the checkout the ``mammoshare`` package runs from (an editable install); an
    installed package carries no bundles, so then the error asks for ``--bundles DIR``."""
    candidates = [Path(cwd or Path.cwd()).absolute() / "bundles", Path(__file__).resolve().parents[2] / "bundles"]
    for folder in candidates:
        if _holds_bundles(folder):
            return folder
    raise ValueError(
        f"no bundles folder found (looked in {', '.join(str(c) for c in candidates)}): give --bundles DIR, the "
        f"folder that holds the bundles {', '.join(STUDY_BUNDLES)} (the repository's bundles/)"
    )


@dataclass
class StudyOptions:
    preset: str | Preset
    out: Path
    centre_a: Path | None = None
    centre_a_format: str = "inbreast"
    bcdr: Path | None = None
    bcdr_generators: dict[str, dict[str, Path]] | list[str] | None = None
    optimam_generator: Path | None = None
    seeds: int | None = None
    only: list[str] | None = None
    tasks: list[str] | None = None
    classifiers: list[str] | None = None
    fractions: list[float] | None = None
    positive_class: str = "lesion"
    device: str | None = None
    #: data loader worker processes of the bundles (their default: 0)
    num_workers: int | None = None
    bundles_dir: Path | None = None
    skip_bad: bool = False
    #: None: one worker per GPU when there are several; False: always in this process
    parallel: bool | None = None
    #: the GPU indices for the workers, one stage per GPU at a time (default: all of
    #: torch.cuda.device_count() when there are several; given, even one GPU runs in a worker)
    gpus: list[int] | None = None
    progress: bool = True
    verbose: bool = False


@dataclass
class Plan:
    preset: Preset
    study_dir: Path
    bundles_dir: Path
    inputs: StudyInputs
    seeds: list[int]
    selection: dict[str, list]
    specs: list[dict] = field(default_factory=list)  # stages and runnable cells, in phase order
    cells: list[dict] = field(default_factory=list)  # every cell of the matrix (runnable or not)

    def spec(self, spec_id: str) -> dict:
        for spec in self.specs:
            if spec["id"] == spec_id:
                return spec
        raise KeyError(spec_id)


@dataclass
class StudyResult:
    exit_status: int
    study_dir: Path
    records: dict[str, dict]
    cells: list[dict]
    ran: list[str]
    reused: list[str]
    failed: list[str]
    not_run: list[str]
    outputs: dict[str, Path]
    seconds: float


# ----------------------------------------------------------------------------------------------
# planning
# ----------------------------------------------------------------------------------------------


def _rel(path: Path, study_dir: Path) -> str:
    """A path for a hashed config: relative to the study folder when inside it (a moved study stays
    valid), absolute otherwise."""
    path = Path(path).absolute()
    return path.relative_to(study_dir).as_posix() if path.is_relative_to(study_dir) else path.as_posix()


def _bundle_config(bundles_dir: Path, bundle: str, name: str) -> Path:
    return bundles_dir / bundle / "configs" / name


def _config_sha(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None


def _selection(options: StudyOptions) -> dict[str, list]:
    rows = [row_by_key(r).key for r in options.only] if options.only else [r.key for r in ROWS]
    tasks = list(options.tasks) if options.tasks else list(TASKS)
    classifiers = list(options.classifiers) if options.classifiers else list(CLASSIFIERS)
    fractions = [float(f) for f in options.fractions] if options.fractions else list(FRACTIONS)
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; use one of {list(TASKS)}")
    for classifier in classifiers:
        if classifier not in CLASSIFIERS:
            raise ValueError(f"unknown classifier {classifier!r}; use one of {list(CLASSIFIERS)}")
    for fraction in fractions:
        if fraction not in FRACTIONS:
            raise ValueError(f"unknown training data fraction {fraction!r}; use one of {list(FRACTIONS)}")
    return {"rows": rows, "tasks": tasks, "classifiers": classifiers, "fractions": fractions}


def _source_reason(row: Row, task: str, inputs: StudyInputs) -> str | None:
    """Why a row cannot run for a task by design (the sources that were not given), or None."""
    reasons = []
    if row.real_bcdr and inputs.bcdr_root is None:
        reasons.append("no BCDR data given (--bcdr DIR): the real BCDR lesions are not available")
    for generator in row.synthetic:
        if generator == "optimam":
            if inputs.optimam_file is None:
                reasons.append(inputs.optimam_reason)
        elif inputs.bcdr_root is None and generator not in inputs.generator_files.get(task, {}):
            reason = (
                f"no BCDR data (--bcdr DIR) to train the {GENERATORS[generator][2]} on" if generator == "ddpm" else
                f"no BCDR data (--bcdr DIR) and no BCDR generator files for the task {task!r} "
                f"(--bcdr-generators {task}=DCGAN_FILE,WGANGP_FILE)"
            )
            if reason not in reasons:
                reasons.append(reason)
    return "; ".join(reasons) or None


def plan_study(options: StudyOptions) -> Plan:
    """Resolve the inputs (writing the demo's phantom data) and lay out every stage and cell."""
    preset = PRESETS[options.preset] if isinstance(options.preset, str) else options.preset
    if options.positive_class not in ("lesion", "healthy"):
        raise ValueError(f"unknown positive class {options.positive_class!r}; use lesion or healthy")
    if options.centre_a_format not in ("inbreast", "cbis-ddsm"):
        raise ValueError(f"unknown centre A format {options.centre_a_format!r}; use inbreast or cbis-ddsm")
    study_dir = Path(options.out).absolute()
    study_dir.mkdir(parents=True, exist_ok=True)
    bundles_dir = Path(options.bundles_dir).absolute() if options.bundles_dir else default_bundles_dir()
    for bundle in STUDY_BUNDLES:
        if not (bundles_dir / bundle / "configs").is_dir():
            raise ValueError(f"{bundles_dir / bundle}: bundle not found (give --bundles DIR, the folder of the bundles)")
    generators = options.bcdr_generators
    if generators is None or isinstance(generators, list):
        generators = parse_bcdr_generators(generators)
    selection = _selection(options)
    n_seeds = preset.seeds if options.seeds is None else int(options.seeds)
    if n_seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {n_seeds}")
    seeds = list(range(n_seeds))
    inputs = resolve_inputs(
        preset, study_dir, bundles_dir, options.centre_a, options.centre_a_format, options.bcdr, generators,
        options.optimam_generator, options.device,
    )
    plan = Plan(preset, study_dir, bundles_dir, inputs, seeds, selection)
    runtime = {"device": options.device, "num_workers": options.num_workers}
    specs: dict[str, dict] = {}

    def add(spec: dict) -> dict:
        if spec["id"] not in specs:
            spec["config"]["deps"] = {d: specs[d]["hash"] for d in spec.get("deps", [])}
            spec["hash"] = config_hash(spec["config"])
            specs[spec["id"]] = spec
        return specs[spec["id"]]

    def datalist(role: str, task: str) -> dict:
        if role == "centre_a":
            root, dataset, option = inputs.centre_a_root, options.centre_a_format, inputs.centre_a_option
            label = f"centre A datalist ({dataset}, task {task})"
        else:
            root, dataset, option = inputs.bcdr_root, "bcdr", inputs.bcdr_option
            label = f"BCDR datalist (task {task})"
        return add({
            "id": f"datalist/{role}/{task}",
            "kind": "datalist",
            "label": label,
            "dir": f"stages/datalists/{role}_{task}",
            "config": {"role": role, "dataset": dataset, "root": _rel(root, study_dir), "task": task,
                       "seed": preset.data_seed, "skip_bad": bool(options.skip_bad),
                       "calcifications": preset.calcifications if dataset == "inbreast" else None,
                       "apply_voi": preset.apply_voi},
            "inputs": {"root": str(root), "option": option},
            "required": [DATALIST_FILE],
        })

    def synthetic(generator: str, task: str) -> dict:
        centre, bundle, label = GENERATORS[generator]
        if generator == "optimam":
            config_file = _bundle_config(bundles_dir, OPTIMAM_BUNDLE, "inference.json")
            return add({
                "id": "synthetic/optimam",
                "kind": "synthetic",
                "label": f"synthetic set of the {label}",
                "dir": "stages/synthetic/optimam",
                "config": {"generator": generator, "bundle": bundle, "task": "mass", "num_samples": preset.synthetic_count,
                           "seed": preset.synthetic_seed, "source": "file", "file_sha256": sha256_file(inputs.optimam_file)
                           if inputs.optimam_file.is_file() else None, "network": dict(inputs.optimam_network),
                           "bundle_config_sha256": _config_sha(config_file)},
                "inputs": {"config_file": str(config_file), "checkpoint": str(inputs.optimam_file),
                           "option": inputs.optimam_option},
                "runtime": runtime,
                "required": [f"{SYNTHETIC_SUBDIR}/synthetic_datalist.json"],
            })
        config_file = _bundle_config(bundles_dir, bundle, "inference.json")
        file = inputs.generator_files.get(task, {}).get(generator)
        common = {"generator": generator, "bundle": bundle, "task": task, "num_samples": preset.synthetic_count,
                  "seed": preset.synthetic_seed, "bundle_config_sha256": _config_sha(config_file)}
        if file is not None:
            return add({
                "id": f"synthetic/{generator}/{task}",
                "kind": "synthetic",
                "label": f"synthetic set of the {label} file for the task {task}",
                "dir": f"stages/synthetic/{generator}_{task}",
                "config": {**common, "source": "file", "file_sha256": sha256_file(file) if file.is_file() else None},
                "inputs": {"config_file": str(config_file), "checkpoint": str(file),
                           "option": f"--bcdr-generators {task}=..."},
                "runtime": runtime,
                "required": [f"{SYNTHETIC_SUBDIR}/synthetic_datalist.json"],
            })
        settings = preset.gans[generator]
        gan_config_file = _bundle_config(bundles_dir, bundle, "train.json")
        source = datalist("bcdr", task)
        gan = add({
            "id": f"gan/{generator}/{task}",
            "kind": "gan",
            "label": f"{label} training (task {task})",
            "dir": f"stages/gans/{generator}_{task}",
            "config": {"generator": generator, "bundle": bundle, "task": task, "seed": preset.gan_seed,
                       "subsets": list(preset.gan_subsets),
                       "settings": settings.train_overrides(task),
                       "bundle_config_sha256": _config_sha(gan_config_file)},
            "inputs": {"config_file": str(gan_config_file), "datalist": str(stage_dir(study_dir, source) / DATALIST_FILE)},
            "runtime": runtime,
            "deps": [source["id"]],
            "required": ["run/model.pt"],
        })
        if preset.audit is not None:
            audit(generator, task, gan, source, settings)
        return add({
            "id": f"synthetic/{generator}/{task}",
            "kind": "synthetic",
            "label": f"synthetic set of the {label} trained for the task {task}",
            "dir": f"stages/synthetic/{generator}_{task}",
            "config": {**common, "source": "trained", "network": settings.sampling_network(),
                       "use_snapshots": generator == "dcgan"},
            "inputs": {"config_file": str(config_file), "gan_dir": str(stage_dir(study_dir, gan))},
            "runtime": runtime,
            "deps": [gan["id"]],
            "required": [f"{SYNTHETIC_SUBDIR}/synthetic_datalist.json"],
        })

    def audit(generator: str, task: str, gan: dict, source: dict, settings) -> dict:
        """The audit of a study-trained generator. Train: the lesion patches of centre B it trained
        on; holdout: centre A's lesion patches of the task (centre B has no unseen patients left)."""
        _, bundle, label = GENERATORS[generator]
        config_file = _bundle_config(bundles_dir, bundle, "inference.json")
        centre_a = datalist("centre_a", task)
        a = preset.audit
        return add({
            "id": f"audit/{generator}/{task}",
            "kind": "audit",
            "label": f"audit of the {label} trained for the task {task}",
            "dir": f"stages/audits/{generator}_{task}",
            "config": {"generator": generator, "bundle": bundle, "task": task, "num_samples": a.num_samples,
                       "seed": preset.synthetic_seed, "features": a.features, "msssim_pairs": a.msssim_pairs,
                       "encoder_steps": a.encoder_steps, "network": settings.sampling_network(),
                       "use_snapshots": generator == "dcgan", "skip_bad": bool(options.skip_bad),
                       "train": {"datalist": "centre B (BCDR)", "subsets": list(preset.gan_subsets), "labels": "lesion"},
                       "holdout": {"datalist": f"centre A ({options.centre_a_format})",
                                   "subsets": ["training", "validation", "test"], "labels": "lesion"},
                       "bundle_config_sha256": _config_sha(config_file)},
            "inputs": {"config_file": str(config_file), "gan_dir": str(stage_dir(study_dir, gan)),
                       "train": str(stage_dir(study_dir, source) / DATALIST_FILE),
                       "holdout": str(stage_dir(study_dir, centre_a) / DATALIST_FILE)},
            "runtime": runtime,
            "deps": [gan["id"], source["id"], centre_a["id"]],
            "required": [f"{AUDIT_SUBDIR}/audit.json"],
        })

    train_config = _bundle_config(bundles_dir, "classifier_inbreast", "train.json")
    eval_config = _bundle_config(bundles_dir, "classifier_inbreast", "evaluate.json")
    for task in TASKS:
        for classifier in CLASSIFIERS:
            for fraction in FRACTIONS:
                for row in ROWS:
                    for seed in seeds:
                        cell = {
                            "id": f"cell/{task}/{classifier}/{fraction_label(fraction)}/{row.key}/seed{seed}",
                            "kind": "cell",
                            "task": task, "classifier": classifier, "fraction": fraction, "row": row.key, "seed": seed,
                            "label": f"{CLASSIFIERS[classifier]}, {row.label}, {fraction_label(fraction)} of the "
                                     f"training data, task {task}, seed {seed}",
                        }
                        selected = (task in selection["tasks"] and classifier in selection["classifiers"]
                                    and fraction in selection["fractions"] and row.key in selection["rows"])
                        reason = NOT_SELECTED if not selected else _source_reason(row, task, inputs)
                        if reason is not None:
                            plan.cells.append({**cell, "status": "not_run", "reason": reason})
                            continue
                        deps = [datalist("centre_a", task)]
                        sources = [synthetic(g, task) for g in row.synthetic]
                        real = datalist("bcdr", task) if row.real_bcdr else None
                        deps += sources + ([real] if real else [])
                        settings = preset.classifiers[classifier]
                        spec = add({
                            **cell,
                            "dir": f"cells/{task}_{classifier}_{int(fraction * 100)}_{row.key}_seed{seed}",
                            "config": {
                                "task": task, "classifier": classifier, "train_fraction": fraction, "row": row.key,
                                "seed": seed, "positive_class": options.positive_class,
                                "centre_a_format": options.centre_a_format,
                                "classifier_settings": asdict(settings),
                                "synthetic_count": preset.synthetic_count if sources else 0,
                                "real_lesion_count": preset.real_lesion_count[task] if real else None,
                                "n_bootstrap": preset.n_bootstrap,
                                "keep_weights": preset.keep_classifier_weights,
                                "train_config_sha256": _config_sha(train_config),
                                "evaluate_config_sha256": _config_sha(eval_config),
                            },
                            "inputs": {
                                "train_config": str(train_config),
                                "eval_config": str(eval_config),
                                "datalist": str(stage_dir(study_dir, deps[0]) / DATALIST_FILE),
                                "synthetic": [str(stage_dir(study_dir, s) / SYNTHETIC_SUBDIR / SYNTHETIC_DATALIST)
                                              for s in sources],
                                "real_lesions": str(stage_dir(study_dir, real) / DATALIST_FILE) if real else None,
                            },
                            "runtime": runtime,
                            "deps": [d["id"] for d in deps],
                            "required": [METRICS_FILE],
                        })
                        plan.cells.append({**cell, "status": "planned", "spec_id": spec["id"]})
    plan.specs = sorted(specs.values(), key=lambda s: PHASES.index(s["kind"]))
    return plan


# ----------------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------------


def detect_gpus(options: StudyOptions) -> list[int]:
    """The GPUs whose worker processes run the stages: ``--gpus`` (checked against the visible ones,
    except for CPU worker slots), else every GPU when there are several; [] runs the stages in this
    process one after the other."""
    if options.parallel is False:
        return []
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        count = 0
    if options.gpus is not None:
        on_cpu = options.device is not None and not str(options.device).startswith("cuda")
        missing = [] if on_cpu else [g for g in options.gpus if not 0 <= g < count]  # CPU: worker slots only
        if missing:
            raise ValueError(f"--gpus {','.join(map(str, options.gpus))}: GPU {missing[0]} is not there "
                             f"({count} CUDA GPU(s) visible); give indices below {count}, or no --gpus on CPU")
        return list(options.gpus)
    if options.device is not None and not str(options.device).startswith("cuda"):
        return []
    return list(range(count)) if count > 1 else []


def run_in_worker(spec: dict, study_dir: Path, gpu: int, console_level: int) -> dict:
    """One stage in a worker process that sees one GPU only; returns its record."""
    work = study_dir / ".work"
    work.mkdir(exist_ok=True)
    spec_file = work / f"{spec['hash'][:16]}.json"
    worker_spec = dict(spec)
    runtime = dict(spec.get("runtime", {}))
    if runtime.get("device") is None or str(runtime["device"]).startswith("cuda"):
        runtime["device"] = "cuda"  # the one visible GPU
    runtime["gpu_slot"] = f"GPU {gpu}"
    worker_spec["runtime"] = runtime
    write_json_atomically(spec_file, {"spec": worker_spec, "study_dir": str(study_dir), "console_level": console_level})
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpu))
    source_root = str(Path(__file__).resolve().parents[2])  # mammoshare and transforms, even when not installed
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH")) if p)
    process = subprocess.run([sys.executable, "-m", "mammoshare.study.worker", str(spec_file)], env=env)
    spec_file.unlink(missing_ok=True)
    record = read_record(stage_dir(study_dir, spec))
    if process.returncode != 0 or record is None or record.get("status") not in ("done", "failed"):
        record = dict(record or {"id": spec["id"], "kind": spec["kind"], "hash": spec["hash"], "config": spec["config"]})
        record.update(status="failed", error=f"the worker process on GPU {gpu} exited with status {process.returncode} "
                                             f"before finishing; see {spec['dir']}/log.txt")
    return record


def run_study(options: StudyOptions | None = None, **kwargs: Any) -> StudyResult:
    """Run (or resume) a study and write its tables and report; see :class:`StudyOptions`."""
    from tqdm.auto import tqdm

    from .report import write_outputs

    options = options or StudyOptions(**kwargs)
    started = time.perf_counter()
    stage_seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    plan = plan_study(options)
    stage_seconds["planning (inputs, phantom data)"] = time.perf_counter() - t0
    study_dir = plan.study_dir
    console_level = logging.INFO if options.verbose else logging.ERROR
    gpus = detect_gpus(options)
    records: dict[str, dict] = {}
    ran: list[str] = []
    reused: list[str] = []
    bar = tqdm(total=len(plan.specs), desc=f"study ({plan.preset.name})", unit="stage", disable=not options.progress,
               dynamic_ncols=True)
    try:
        for phase in PHASES:
            t0 = time.perf_counter()
            todo: list[dict] = []
            for spec in (s for s in plan.specs if s["kind"] == phase):
                broken = [d for d in spec.get("deps", []) if records[d].get("status") != "done"]
                folder = stage_dir(study_dir, spec)
                if broken:
                    first = records[broken[0]]
                    records[spec["id"]] = {
                        "id": spec["id"], "kind": spec["kind"], "label": spec.get("label"), "hash": spec["hash"],
                        "config": spec["config"], "status": "failed", "upstream_failure": True,
                        "error": f"{first.get('label', first['id'])} failed: {first.get('error')}",
                    }
                    bar.update(1)
                    continue
                previous = read_record(folder)
                if record_is_reusable(previous, spec, folder):
                    records[spec["id"]] = {**previous, "reused": True}
                    reused.append(spec["id"])
                    bar.update(1)
                    continue
                todo.append(spec)
            # one cell (or GAN training) per GPU: always with --gpus, else with several GPUs
            workers = gpus if phase in ("gan", "cell") and (len(gpus) > 1 or options.gpus is not None) else []
            for record in execute_stages(todo, study_dir, workers, console_level, bar):
                records[record["id"]] = {**record, "reused": False}
                ran.append(record["id"])
                if record.get("status") == "failed":
                    bar.write(f"FAILED {record['id']}: {record.get('error')}")
            stage_seconds[phase] = time.perf_counter() - t0
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    outputs = write_outputs(plan, records, options, stage_seconds, seconds, ran, reused, gpus)
    failed = [r["id"] for r in records.values() if r.get("status") == "failed"]
    not_run = [c["id"] for c in plan.cells if c["status"] == "not_run"]
    cells = outputs.pop("_cells")
    return StudyResult(
        exit_status=1 if failed else 0,
        study_dir=study_dir,
        records=records,
        cells=cells,
        ran=ran,
        reused=reused,
        failed=failed,
        not_run=not_run,
        outputs=outputs,
        seconds=time.perf_counter() - started,
    )


def execute_stages(specs: list[dict], study_dir: Path, gpus: list[int], console_level: int, bar):
    """Run stages: in this process one after the other, or one per GPU in worker processes."""
    if not specs:
        return
    if not gpus:
        for spec in specs:
            bar.set_postfix_str(spec["id"], refresh=True)
            yield execute_spec(spec, study_dir, console_level)
            bar.update(1)
        return
    free: queue.Queue[int] = queue.Queue()
    for gpu in gpus:
        free.put(gpu)

    def work(spec: dict) -> dict:
        gpu = free.get()
        try:
            return run_in_worker(spec, study_dir, gpu, console_level)
        finally:
            free.put(gpu)

    with ThreadPoolExecutor(max_workers=len(gpus)) as pool:
        futures = [pool.submit(work, spec) for spec in specs]
        for future in as_completed(futures):
            record = future.result()
            bar.set_postfix_str(record["id"], refresh=False)
            bar.update(1)
            yield record
