"""The audit's public API for the exchange gate, the medigan bridge and the study (torch-free
except :func:`run_audit`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..hashing import sha256_bytes
from .errors import AuditError, AuditGateError
from .verdicts import FAMILIES, GATED_FAMILIES, VERDICTS

__all__ = [
    "AuditError",
    "AuditGateError",
    "run_audit",
    "load_audit",
    "run_or_load_audit",
    "gate",
    "audit_summary",
    "privacy_preservation_text",
    "model_card_section",
    "HEADLINE_FIGURES",
]

AUDIT_FILE = "audit.json"
SCHEMA = "mammoshare-audit/1"

#: the figures the compact summary keeps, per family
HEADLINE_FIGURES = {
    "memorisation": ("copy_rate_pixel", "copy_rate_feature", "low_distance_ratio_rate_pixel", "authenticity_pixel"),
    "membership": ("distance_attack_pixel_auc", "distance_attack_pixel_tpr_at_1pct_fpr", "domias_auc", "fld_likelihood_gap"),
    "diversity": ("msssim_synthetic_pairs", "cluster_ratio"),
    "fidelity": ("frechet_distance", "precision", "recall", "coverage"),
}


def run_audit(**kwargs) -> dict:
    """Run an audit (see :func:`mammoshare.audit.runner.run_audit` for the arguments); returns the
    audit dict, also written to ``out/audit.json``."""
    from .runner import run_audit as _run

    return _run(**kwargs)


def _audit_path(audit_dir: str | os.PathLike) -> Path:
    path = Path(audit_dir)
    return path if path.suffix == ".json" else path / AUDIT_FILE


def load_audit(audit_dir: str | os.PathLike) -> dict:
    """A finished audit from its folder (or its ``audit.json``), checked for the schema and the
    four verdicts; the dict gets ``_path`` and ``_sha256`` (of the file's bytes)."""
    path = _audit_path(audit_dir)
    if not path.is_file():
        raise AuditError(f"{path}: no audit here; run `mammoshare audit BUNDLE_DIR --train ... --holdout ... --out {path.parent}` first")
    raw = path.read_bytes()
    try:
        audit = json.loads(raw)
    except ValueError as e:
        raise AuditError(f"{path}: not valid JSON ({e}); run the audit again into a new folder") from e
    if not isinstance(audit, dict) or audit.get("schema") != SCHEMA:
        raise AuditError(f"{path}: not a mammoshare audit (schema {SCHEMA!r} expected)")
    verdicts = audit.get("verdicts", {})
    bad = [f for f in FAMILIES if verdicts.get(f) not in VERDICTS]
    if bad:
        raise AuditError(f"{path}: no valid verdict for {bad}; run the audit again")
    audit["_path"] = str(path)
    audit["_sha256"] = sha256_bytes(raw)
    return audit


def run_or_load_audit(audit_dir: str | os.PathLike | None = None, **run_kwargs) -> dict:
    """``load_audit(audit_dir)`` when a finished audit is given, else ``run_audit(**run_kwargs)``
    (then loaded back from ``run_kwargs['out']``, so both paths return the same shape)."""
    if audit_dir is not None:
        return load_audit(audit_dir)
    if "out" not in run_kwargs:
        raise AuditError("give a finished audit folder, or the arguments of a new audit (bundle_dir, train, holdout, out)")
    run_audit(**run_kwargs)
    return load_audit(run_kwargs["out"])


def _as_audit(audit: dict | str | os.PathLike) -> dict:
    return audit if isinstance(audit, dict) else load_audit(audit)


def _weights_sha256(audit: dict) -> set[str]:
    return {w.get("sha256") for w in audit.get("generator", {}).get("weights", []) if isinstance(w, dict)}


def gate(audit: dict | str | os.PathLike, accept_risk: str | None = None, weights_sha256: str | None = None) -> dict:
    """The exchange gate: refuse (raise :class:`AuditGateError`) a generator whose memorisation or
    membership verdict is ``fail``, unless ``accept_risk`` gives a reason; refuse an audit of other
    weights when ``weights_sha256`` (the file to be shared) is given.

    Returns the record to store beside the signed manifest::

        {"decision": "pass" | "accepted-risk", "verdicts": {...}, "failed": [...],
         "accepted_risk": None | {"reason": str, "families": [...]}, "audit_sha256": str | None,
         "summary": audit_summary(audit)}
    """
    audit = _as_audit(audit)
    where = audit.get("_path", "the audit")
    if weights_sha256 is not None:
        audited = _weights_sha256(audit)
        if weights_sha256 not in audited:
            raise AuditGateError(
                f"{where}: this audit is of other generator weights ({', '.join(sorted(s[:12] for s in audited if s)) or 'unknown'}) "
                f"than the file to share ({weights_sha256[:12]}); audit this generator, or pass its own audit",
                [],
            )
    failed = [f for f in GATED_FAMILIES if audit["verdicts"][f] == "fail"]
    reason = (accept_risk or "").strip()
    if failed and not reason:
        details = []
        for fam in failed:
            bad = [f"{k} {v['value']:.4g} (fail above {v['threshold']['fail']:.4g})" if v["worse"] == "higher"
                   else f"{k} {v['value']:.4g} (fail below {v['threshold']['fail']:.4g})"
                   for k, v in audit["families"][fam]["figures"].items() if v["verdict"] == "fail"]
            details.append(f"{fam}: {'; '.join(bad)}")
        raise AuditGateError(
            f"{where}: the generator fails the privacy audit ({' | '.join(details)}); it is not shared. Retrain it "
            "(fewer epochs, more data, an earlier snapshot), or pass --accept-risk \"reason\" to share it anyway (recorded)",
            failed,
        )
    return {
        "decision": "accepted-risk" if failed else "pass",
        "verdicts": dict(audit["verdicts"]),
        "failed": failed,
        "accepted_risk": {"reason": reason, "families": failed} if failed else None,
        "audit_sha256": audit.get("_sha256"),
        "summary": audit_summary(audit),
    }


def _headline(fig: dict) -> dict:
    out = {"value": fig["value"], "verdict": fig["verdict"], "baseline": fig.get("baseline")}
    if fig.get("interval") is not None:
        out["interval"] = fig["interval"]
    out["threshold"] = fig["threshold"]
    return out


def audit_summary(audit: dict | str | os.PathLike) -> dict:
    """The compact, JSON-serialisable summary for a signed manifest and a model card: verdicts,
    headline figures with their baselines and thresholds, the sizes, the features, the seed. It names
    no patient, no image and no local path."""
    audit = _as_audit(audit)
    data = audit["data"]
    figures = {}
    for fam, names in HEADLINE_FIGURES.items():
        available = audit["families"][fam]["figures"]
        figures[fam] = {n: _headline(available[n]) for n in names if n in available}
    return {
        "schema": audit["schema"],
        "mammoshare_version": audit.get("mammoshare_version"),
        "created": audit.get("run", {}).get("created"),
        "seed": audit.get("seed"),
        "generator": {k: audit.get("generator", {}).get(k) for k in ("name", "version")},
        "weights_sha256": sorted(s for s in _weights_sha256(audit) if s),
        "samples": data["synthetic"]["patches"],
        "train_patches": data["train"]["patches"],
        "holdout_patches": data["holdout"]["patches"],
        "features": audit["features"]["kind"],
        "verdicts": dict(audit["verdicts"]),
        "figures": figures,
        "audit_sha256": audit.get("_sha256"),
    }


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def privacy_preservation_text(audit: dict | str | os.PathLike, accepted_risk: str | None = None) -> str:
    """One paragraph for medigan's ``privacy_preservation`` field: what was tested, the verdicts and
    the key figures, and that it is an empirical audit, not a guarantee."""
    s = audit_summary(audit)
    mem, mia = s["figures"]["memorisation"], s["figures"]["membership"]
    get = lambda d, k: d.get(k, {}).get("value")  # noqa: E731
    auc = mia.get("distance_attack_pixel_auc", {})
    interval = auc.get("interval") or [None, None]
    text = (
        f"Empirical privacy audit by mammoshare {s['mammoshare_version']} ({s['created']}) of {s['samples']} samples against "
        f"{s['train_patches']} training and {s['holdout_patches']} unseen holdout patches, thresholds calibrated on that real data. "
        f"Memorisation: {s['verdicts']['memorisation']} (copy rate {_pct(get(mem, 'copy_rate_pixel'))} in pixel space, "
        f"{_pct(get(mem, 'copy_rate_feature'))} in feature space, vs 1% for real unseen patches; authenticity "
        f"{_pct(get(mem, 'authenticity_pixel'))}). Membership inference: {s['verdicts']['membership']} (distance-attack AUC "
        f"{_fmt(auc.get('value'))} [{_fmt(interval[0])}, {_fmt(interval[1])}], TPR at 1% FPR "
        f"{_pct(get(mia, 'distance_attack_pixel_tpr_at_1pct_fpr'))}; DOMIAS-style AUC {_fmt(get(mia, 'domias_auc'))}). "
        f"Diversity: {s['verdicts']['diversity']}; fidelity: {s['verdicts']['fidelity']}. "
        "No differential privacy; not a formal guarantee."
    )
    if accepted_risk:
        text += f" Shared despite a failed check, accepted risk: {accepted_risk}."
    return text


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def model_card_section(audit: dict | str | os.PathLike, accepted_risk: str | None = None) -> str:
    """A Markdown section "Privacy and quality audit" for a model card (docs/README.md)."""
    s = audit_summary(audit)
    lines = [
        "## Privacy and quality audit",
        "",
        f"Audited by mammoshare {s['mammoshare_version']} on {s['created']}: {s['samples']} samples against {s['train_patches']} "
        f"training and {s['holdout_patches']} holdout patches ({s['features']} features, seed {s['seed']}); thresholds "
        "come from the real data (train vs holdout).",
        "",
        "| family | figure | value | real baseline | verdict |",
        "|---|---|---|---|---|",
    ]
    for fam, figs in s["figures"].items():
        for name, f in figs.items():
            lines.append(f"| {fam} ({s['verdicts'][fam]}) | {name} | {f['value']:.4g} | "
                         f"{'–' if f.get('baseline') is None else format(f['baseline'], '.4g')} | {f['verdict']} |")
    if accepted_risk:
        lines += ["", f"Shared despite a failed check; accepted risk: {accepted_risk}"]
    lines += ["", "An empirical audit against these attacks and this data, not a formal privacy guarantee.", ""]
    return "\n".join(lines)


