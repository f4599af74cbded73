"""``audit.md``: the audit as a readable report (figures, intervals, thresholds, verdicts, rules)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_markdown", "figure_table"]

_TITLES = {
    "memorisation": "Memorisation (copies of training patches)",
    "membership": "Membership inference",
    "diversity": "Diversity (mode collapse)",
    "fidelity": "Fidelity",
}


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def figure_table(figures: dict) -> list[str]:
    lines = ["| figure | value | 95% interval | real baseline | warn | fail | verdict |", "|---|---|---|---|---|---|---|"]
    for name, f in figures.items():
        verdict = f["verdict"] + ("" if f.get("decides", True) else " (reported only)")
        base = _fmt(f.get("baseline"))
        if f.get("baseline_interval"):
            base += " " + _fmt(f["baseline_interval"])
        lines.append(
            f"| {name} | {_fmt(f['value'])} | {_fmt(f.get('interval'))} | {base} | {_fmt(f['threshold']['warn'])} | "
            f"{_fmt(f['threshold']['fail'])} | **{verdict}** |"
        )
    return lines


def _sampling(gen: dict) -> list[str]:
    """A diffusion model's sampling settings (the GANs sample in one step: nothing to say)."""
    if gen.get("family") != "diffusion":
        return []
    return [f"- sampling: diffusion model, {gen.get('sampler')} sampler with {gen.get('num_inference_steps')} steps "
            f"(trained with the {gen.get('training_scheduler')} schedule), lesion type {gen.get('lesion_type')}"]


def write_markdown(audit: dict, path: Path) -> Path:
    data, feats = audit["data"], audit["features"]
    gen = audit.get("generator", {})
    lines = [
        f"# Privacy and quality audit: {gen.get('name', data['synthetic']['datalist'])} {gen.get('version', '')}".rstrip(),
        "",
        f"mammoshare {audit['mammoshare_version']}, seed {audit['seed']}, {audit['run']['created']}.",
        "",
        "| family | verdict |",
        "|---|---|",
        *[f"| {_TITLES[k]} | **{v}** |" for k, v in audit["verdicts"].items()],
        "",
        "## Data",
        "",
        f"- synthetic: {data['synthetic']['patches']} patches ({data['synthetic']['datalist']}"
        f"{', sampled by the audit' if data['synthetic']['sampled_by_audit'] else ''})",
        *_sampling(gen),
        *[
            f"- {name}: {d['patches']} patches ({d['labels']}) of {d['patients']} patients, {d['datalist']} {d['subsets']}"
            + (f", {d['skipped']} skipped" if d["skipped"] else "")
            for name, d in (("train", data["train"]), ("holdout", data["holdout"]))
        ],
        f"- pre-processing: {data['preprocessing']}",
        "",
        "## Feature space",
        "",
        f"{feats['description']} ({feats['dim']} dimensions).",
        "",
        f"Why: {feats['justification']}",
        "",
        "## Calibration on the real data",
        "",
        f"- pixel distance: {audit['calibration']['pixel_distance']}; feature distance: {audit['calibration']['feature_distance']}",
    ]
    for space in ("pixel", "feature"):
        c = audit["calibration"][space]
        lines.append(
            f"- {space}: copy distance (1st percentile holdout -> train) {c['copy_distance_train']:.4g}; "
            f"train -> holdout {c['copy_distance_holdout']:.4g}; distance-ratio threshold {c['ratio_threshold']:.4g}; "
            f"holdout -> train quantiles {', '.join(f'{k} {v:.4g}' for k, v in c['holdout_to_train_quantiles'].items())}"
        )
    lines.append(f"- cluster distance (median holdout -> train feature distance): {audit['calibration']['cluster_distance']:.4g}")
    for name, fam in audit["families"].items():
        lines += ["", f"## {_TITLES[name]}: {fam['verdict']}", "", *figure_table(fam["figures"]), ""]
        lines += [f"- **{k}**: {f['rule']}" for k, f in fam["figures"].items()]
        if fam.get("per_snapshot"):
            lines += ["", "| snapshot | samples | MS-SSIM | clusters (real) | verdict |", "|---|---|---|---|---|"]
            lines += [
                f"| {s['snapshot']} | {s['samples']} | {_fmt(s['msssim_mean'])} | {s['clusters']} ({s['real_clusters']}) | {s['verdict']} |"
                for s in fam["per_snapshot"]
            ]
    policy = audit["policy"]
    lines += [
        "",
        "## Policy",
        "",
        "Thresholds come from this run's real data (the baselines above); the policy only sets how far beyond them "
        "is a warning or a failure: " + ", ".join(f"{k} = {v}" for k, v in policy.items()) + ".",
        "",
        "This is an empirical audit against these attacks and this data, not a formal privacy guarantee.",
        "",
        "## Files",
        "",
        *[f"- {k}: `{v}`" for k, v in audit["files"].items()],
        "",
        "`nearest_neighbours.png` and `worst_pairs.json` show or name real training patches: they stay in the centre.",
        "",
    ]
    path.write_text("\n".join(lines))
    return path
