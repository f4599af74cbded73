"""Thresholds and verdicts: every threshold comes from the run's own real data (train vs holdout);
the policy only says how far beyond what real data gives is a warning or a failure.

Verdicts: ``pass``; ``warn`` = worse than the real baseline beyond its sampling noise (a significance
threshold computed on the run's data); ``fail`` = significantly AND substantially worse (the policy
factor applied to the data-derived baseline). A family's verdict is the worst of its figures'.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["AuditPolicy", "VERDICTS", "figure", "worst", "FAMILIES", "GATED_FAMILIES"]

VERDICTS = ("pass", "warn", "fail")
FAMILIES = ("memorisation", "membership", "diversity", "fidelity")
#: the families whose "fail" refuses a generator at the exchange gate
GATED_FAMILIES = ("memorisation", "membership")


@dataclass(frozen=True)
class AuditPolicy:
    """How far from the real baseline is a warning or a failure (not per dataset: the baselines are).

    - ``alpha``: level of the one-sided tests whose critical values are the warn thresholds.
    - ``copy_fail_factor``: a copy-like rate fails at this many times the rate of real unseen data.
    - ``attack_fail_auc``: a membership attack fails at this AUC (the attacker ranks a training
      patient above a holdout patient this often); ``attack_fail_tpr_factor``: or at this many times
      the chance TPR at the attack's false-positive rate.
    - ``msssim_warn_fraction`` / ``msssim_fail_fraction``: mean MS-SSIM of synthetic pairs this far
      of the way from the real pairs' mean to 1 (total collapse).
    - ``cluster_warn_ratio`` / ``cluster_fail_ratio``: distinct clusters of the synthetic set over
      those of as many real patches.
    - ``fidelity_fail_fraction``: precision or coverage below this fraction of the real baseline.
    """

    alpha: float = 0.01
    copy_fail_factor: float = 5.0
    attack_fail_auc: float = 0.6
    attack_fail_tpr_factor: float = 5.0
    msssim_warn_fraction: float = 0.25
    msssim_fail_fraction: float = 0.5
    cluster_warn_ratio: float = 0.5
    cluster_fail_ratio: float = 0.25
    fidelity_fail_fraction: float = 0.5

    def as_dict(self) -> dict:
        return asdict(self)


def _r(value):
    if value is None:
        return None
    if hasattr(value, "tolist") and getattr(value, "ndim", 0) > 0:
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_r(v) for v in value]
    return float(round(float(value), 6))


def figure(value: float, *, worse: str, rule: str, warn: float | None = None, fail: float | None = None,
           interval=None, baseline: float | None = None, baseline_interval=None, unit: str = "",
           decides: bool = True, **extra) -> dict:
    """One figure of the report with its thresholds and verdict.

    ``worse`` is ``"higher"`` or ``"lower"``; a figure beyond ``fail`` fails, beyond ``warn`` warns
    (``decides=False``: reported, never changes the family's verdict).
    """
    if worse not in ("higher", "lower"):
        raise ValueError("worse must be 'higher' or 'lower'")
    beyond = (lambda v, t: v > t) if worse == "higher" else (lambda v, t: v < t)
    verdict = "pass"
    if fail is not None and beyond(value, fail):
        verdict = "fail"
    elif warn is not None and beyond(value, warn):
        verdict = "warn"
    record = {
        "value": _r(value),
        "interval": _r(interval),
        "baseline": _r(baseline),
        "baseline_interval": _r(baseline_interval),
        "threshold": {"warn": _r(warn), "fail": _r(fail)},
        "worse": worse,
        "verdict": verdict,
        "decides": bool(decides),
        "rule": rule,
    }
    if unit:
        record["unit"] = unit
    record.update({k: (_r(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v) for k, v in extra.items()})
    return record


def worst(verdicts) -> str:
    verdicts = list(verdicts)
    return max(verdicts, key=VERDICTS.index) if verdicts else "pass"


def family(figures: dict, extra_verdicts=()) -> dict:
    """A family record: its figures and the worst verdict of those that decide."""
    verdict = worst([f["verdict"] for f in figures.values() if f.get("decides", True)] + list(extra_verdicts))
    return {"verdict": verdict, "figures": figures}
