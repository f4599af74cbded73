"""What each kind of stage does: ``datalist``, ``gan``, ``synthetic``, ``audit`` and ``cell``.

Each function takes the stage spec (see :mod:`mammoshare.study.runner`), its folder (cleared), the
study folder and whether a GAN training resumes, runs the project's code or bundle, and returns the
``outputs`` of the stage record (paths relative to the stage folder). A failure raises; the caller
records it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from ..datalist import SYNTHETIC_DATALIST, read_training_counts
from .stages import StageError, describe_error, run_bundle

__all__ = ["KINDS", "SYNTHETIC_SUBDIR", "DATALIST_FILE", "METRICS_FILE", "AUDIT_SUBDIR"]

DATALIST_FILE = "datalist.json"
SYNTHETIC_SUBDIR = "patches"
METRICS_FILE = "eval/metrics.json"
AUDIT_SUBDIR = "audit"
METRICS = ("accuracy", "f1", "auroc", "auprc")


def _subset_counts(datalist: dict) -> dict[str, dict[str, int]]:
    counts = {}
    for subset in ("training", "validation", "test"):
        labels = Counter(r["label"] for r in datalist.get(subset, []))
        counts[subset] = {
            "lesion": labels[1],
            "healthy": labels[0],
            "patients": len({r["patient_id"] for r in datalist.get(subset, [])}),
        }
    return counts


def _parts(spec: dict) -> tuple[dict, dict, dict]:
    """A stage spec's ``config``, ``inputs`` and ``runtime`` (settings that do not change the result)."""
    return spec["config"], spec["inputs"], spec.get("runtime", {})


def _bundle_overrides(spec: dict, **overrides: Any) -> dict[str, Any]:
    """The overrides of a stage's bundle run on its datalist: the datalist, task and seed, then
    ``overrides``, then the runtime settings that are set (device, loader workers)."""
    config, inputs, runtime = _parts(spec)
    return {"datalist": inputs["datalist"], "task": config["task"], "seed": config["seed"], **overrides,
            **{k: v for k, v in runtime.items() if v is not None}}


def run_datalist(spec: dict, folder: Path, study_dir: Path, resume: bool) -> dict[str, Any]:
    from ..datalist import DatalistError, write_datalist
    from ..readers import build_datalist

    config, inputs = spec["config"], spec["inputs"]
    root = Path(inputs["root"])
    if not root.is_dir():
        raise DatalistError(f"{root}: dataset folder not found (given as {inputs.get('option', 'a dataset root')})")
    datalist, bad_cases = build_datalist(
        config["dataset"], root, task=config["task"], seed=config["seed"], skip_bad=config.get("skip_bad", False),
        calcifications=config.get("calcifications"), apply_voi=config.get("apply_voi"),
    )
    write_datalist(datalist, folder / DATALIST_FILE, bad_cases)
    return {
        "datalist": DATALIST_FILE,
        "phantom": bool(datalist.get("phantom")),
        "counts": _subset_counts(datalist),
        "lesion_type_counts": datalist.get("lesion_type_counts"),
        "calcifications": datalist.get("calcifications"),
        "apply_voi": datalist.get("apply_voi"),
        "skipped_cases": len(bad_cases),
    }


def run_gan(spec: dict, folder: Path, study_dir: Path, resume: bool) -> dict[str, Any]:
    config, inputs, _ = _parts(spec)
    settings = config["settings"]
    overrides = _bundle_overrides(
        spec,
        output_dir=str(folder / "run"),
        subsets=list(config.get("subsets", ("training", "validation", "test"))),
        **settings,  # the preset's train.json overrides of this generator (GanSettings / DiffusionSettings)
        resume=bool(resume),
    )
    run_bundle(Path(inputs["config_file"]), overrides, required=tuple(overrides))
    written = read_training_counts(folder / "run")
    trained_on = {"subsets": written["subsets"], "patches": written["patches"], "patients": written["patients"]}
    model = folder / "run" / "model.pt"
    if not model.is_file():
        raise FileNotFoundError(f"{model}: the GAN training wrote no generator weights")
    snapshots = sorted((folder / "run" / "snapshots").glob("*.pt")) if (folder / "run" / "snapshots").is_dir() else []
    return {"model": "run/model.pt", "snapshots": [f"run/snapshots/{p.name}" for p in snapshots],
            "trained_on": trained_on}


def _sampling_overrides(config: dict, inputs: dict, runtime: dict, out: Path) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Overrides of a generator bundle's ``inference.json`` (and those it must accept) that sample
    ``config["num_samples"]`` patches into ``out``: a study-trained GAN (every snapshot of the DCGAN,
    the last weights otherwise) or a given file."""
    overrides: dict[str, Any] = {
        "num_samples": config["num_samples"],
        "output_dir": str(out),
        "seed": config["seed"],
        "task": config["task"],
        **{k: v for k, v in runtime.items() if k == "device" and v is not None},
    }
    required = ("num_samples", "output_dir", "seed")
    if config.get("network"):  # a generator trained by the study with its own widths
        overrides.update(config["network"])
        required += tuple(config["network"])
    gan_dir = inputs.get("gan_dir")
    if gan_dir is not None:
        snapshots = Path(gan_dir) / "run" / "snapshots"
        if config.get("use_snapshots") and snapshots.is_dir() and any(snapshots.glob("*.pt")):
            overrides["snapshot_dir"] = str(snapshots)  # the paper's DCGAN scheme: every kept snapshot
            required += ("snapshot_dir",)
        else:
            overrides["checkpoint"] = str(Path(gan_dir) / "run" / "model.pt")
            required += ("checkpoint",)
    else:
        checkpoint = Path(inputs["checkpoint"])
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint}: generator file not found (given as {inputs.get('option')})")
        overrides["checkpoint"] = str(checkpoint)
        required += ("checkpoint",)
    return overrides, required


def run_synthetic(spec: dict, folder: Path, study_dir: Path, resume: bool) -> dict[str, Any]:
    from ..datalist import load_datalist

    config, inputs, runtime = _parts(spec)
    if not Path(inputs["config_file"]).is_file():
        raise FileNotFoundError(
            f"{inputs['config_file']}: the generator bundle's inference config is not there; {spec['label']} cannot be sampled"
        )
    out = folder / SYNTHETIC_SUBDIR
    overrides, required = _sampling_overrides(config, inputs, runtime, out)
    gan_dir = inputs.get("gan_dir")
    try:
        run_bundle(Path(inputs["config_file"]), overrides, required=required)
    except Exception as e:
        if gan_dir is None:
            raise StageError(
                f"the generator file given as {inputs.get('option')} cannot be sampled with "
                f"{Path(inputs['config_file']).parent.parent.name}: {describe_error(e)}"
            ) from None
        raise
    data = load_datalist(out / SYNTHETIC_DATALIST)
    return {
        "datalist": f"{SYNTHETIC_SUBDIR}/{SYNTHETIC_DATALIST}",
        "count": len(data["training"]),
        "generator": data.get("generator", {}),
    }


def run_audit_stage(spec: dict, folder: Path, study_dir: Path, resume: bool) -> dict[str, Any]:
    """The privacy and quality audit of a study-trained generator: ``num_samples`` drawn with the
    same bundle inference as its synthetic set (its own widths, the same weights or snapshots), then
    :func:`mammoshare.audit.run_audit` against its training patches and the holdout."""
    from ..audit import audit_summary, load_audit, run_audit

    config, inputs, runtime = _parts(spec)
    samples = folder / "samples"
    overrides, required = _sampling_overrides(config, inputs, runtime, samples)
    run_bundle(Path(inputs["config_file"]), overrides, required=required)
    train, holdout = config["train"], config["holdout"]
    encoder = {"steps": config["encoder_steps"]} if config.get("encoder_steps") else None
    run_audit(
        synthetic=samples / SYNTHETIC_DATALIST, train=inputs["train"], holdout=inputs["holdout"],
        out=folder / AUDIT_SUBDIR, num_samples=None, features=config["features"], seed=config["seed"],
        train_subsets=tuple(train["subsets"]), holdout_subsets=tuple(holdout["subsets"]), labels=train["labels"],
        skip_bad=bool(config.get("skip_bad", False)), cache_dir=folder / "encoder_cache", encoder_settings=encoder,
        msssim_pairs=config["msssim_pairs"], progress=False,
    )
    summary = audit_summary(load_audit(folder / AUDIT_SUBDIR))
    return {
        "audit": f"{AUDIT_SUBDIR}/audit.json",
        "report": f"{AUDIT_SUBDIR}/audit.md",
        "verdicts": summary["verdicts"],
        "summary": summary,
    }


def _metrics_summary(metrics: dict) -> tuple[dict, dict]:
    values = {name: metrics[name] for name in METRICS}
    intervals = {
        name: {"low": metrics["confidence_intervals"][name]["low"], "high": metrics["confidence_intervals"][name]["high"]}
        for name in METRICS
    }
    return values, intervals


def run_cell(spec: dict, folder: Path, study_dir: Path, resume: bool) -> dict[str, Any]:
    import time

    config, inputs, _ = _parts(spec)
    settings = config["classifier_settings"]
    common = _bundle_overrides(spec, dataset=config["centre_a_format"], classifier=config["classifier"],
                               positive_class=config["positive_class"], batch_size=settings["batch_size"])
    train_overrides = {
        **common,
        "output_dir": str(folder / "train"),
        "train_fraction": config["train_fraction"],
        "synthetic": list(inputs.get("synthetic", [])),
        "synthetic_count": config["synthetic_count"],
        "real_lesions": inputs.get("real_lesions"),
        "real_lesion_count": config.get("real_lesion_count"),
        "max_epochs": settings["max_epochs"],
        "epoch_length": settings["epoch_length"],
    }
    start = time.perf_counter()
    run_bundle(Path(inputs["train_config"]), train_overrides, required=tuple(train_overrides))
    written = read_training_counts(folder / "train")  # the counts, and the best validation score by epoch
    counts, best = written["counts"], written.get("best_validation", {})
    train_seconds = time.perf_counter() - start
    checkpoint = folder / "train" / "model.pt"
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: the classifier training kept no checkpoint")
    eval_overrides = {
        **common,
        "output_dir": str(folder / "eval"),
        "checkpoint": str(checkpoint),
        "subset": "test",
        "n_bootstrap": config["n_bootstrap"],
    }
    start = time.perf_counter()
    # evaluate.json overrides train.json, the model-zoo way: both, in this order
    run_bundle([Path(inputs["train_config"]), Path(inputs["eval_config"])], eval_overrides,
               required=tuple(eval_overrides))
    eval_seconds = time.perf_counter() - start
    metrics = json.loads((folder / METRICS_FILE).read_text())
    values, intervals = _metrics_summary(metrics)
    (folder / "train" / "model_final.pt").unlink(missing_ok=True)
    if not config.get("keep_weights", True):
        checkpoint.unlink(missing_ok=True)
    return {
        "metrics": values,
        "ci": intervals,
        "ci_level": metrics.get("ci_level"),
        "positive_class": metrics.get("positive_class"),
        "test_counts": metrics.get("counts"),
        "n_test_patients": metrics.get("n_patients"),
        "constant_prediction": bool(metrics.get("constant_prediction")),
        "test_warnings": metrics.get("warnings", []),
        "training_counts": counts,
        "best_validation": best,
        "timings": {"train_s": round(train_seconds, 3), "evaluate_s": round(eval_seconds, 3)},
        "metrics_file": METRICS_FILE,
        "weights": "train/model.pt" if config.get("keep_weights", True) else None,
    }


KINDS = {"datalist": run_datalist, "gan": run_gan, "synthetic": run_synthetic, "audit": run_audit_stage, "cell": run_cell}
