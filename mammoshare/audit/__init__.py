"""Privacy and quality audit of a generator before it leaves the centre.

``mammoshare audit BUNDLE_DIR --train DATALIST --holdout DATALIST --out DIR`` samples the generator
(or ``--synthetic DATALIST`` reads a finished set) and reports four families of figures, each with
its interval, its threshold calibrated on the real data (train vs holdout) and a verdict
pass / warn / fail: memorisation, membership inference, diversity, fidelity. A GAN bundle is sampled
with the GAN inference, a diffusion bundle (``ddpm_bcdr``: its network_def is MONAI's
``DiffusionModelUNet``) with the diffusion inference and its inference.json's sampling settings
(``--num_inference_steps`` overrides the steps).

The API the exchange gate, the medigan bridge and the study call, one line each::

    audit = run_or_load_audit(audit_dir)                     # or run_or_load_audit(bundle_dir=..., train=..., holdout=..., out=...)
    record = gate(audit, accept_risk=reason, weights_sha256=sha)  # raises AuditGateError on a failed privacy family
    summary = audit_summary(audit)                           # compact dict for the signed manifest / model card
    text = privacy_preservation_text(audit)                  # medigan's privacy_preservation field
    card = model_card_section(audit)                         # Markdown for docs/README.md

Importing this package does not import torch.
"""

from .api import (
    HEADLINE_FIGURES,
    AuditError,
    AuditGateError,
    audit_summary,
    gate,
    load_audit,
    model_card_section,
    privacy_preservation_text,
    run_audit,
    run_or_load_audit,
)
from .verdicts import FAMILIES, GATED_FAMILIES, AuditPolicy


def benchmark(workdir, quick: bool = False, device: str = "cpu") -> dict:
    """The audit's case of ``benchmarks/run.py`` (see :func:`mammoshare.audit.benchmarking.benchmark`)."""
    from .benchmarking import benchmark as _benchmark

    return _benchmark(workdir, quick, device)


__all__ = [
    "run_audit",
    "load_audit",
    "run_or_load_audit",
    "gate",
    "audit_summary",
    "privacy_preservation_text",
    "model_card_section",
    "AuditError",
    "AuditGateError",
    "AuditPolicy",
    "FAMILIES",
    "GATED_FAMILIES",
    "HEADLINE_FIGURES",
    "benchmark",
]
