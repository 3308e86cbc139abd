"""The backtest report: ``metrics.json`` for machines, ``report.md`` with PNG plots for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.metrics import Evaluation


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{100 * v:.2f}%" if pct else f"{v:.3f}"
    return str(v)


def write_report(out_dir: Path, evaluation: Evaluation, metrics: dict[str, Any], meta: dict[str, Any]) -> list[Path]:
    """Write metrics.json, report.md and the plots into ``out_dir``; return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / "metrics.json"]
    files[0].write_text(json.dumps({"meta": meta, **metrics}, indent=2, sort_keys=True) + "\n")
    try:
        import matplotlib  # noqa: F401  (the report extra: the worker's image does not install it)
    except ImportError:
        plots, note = [], ("No plots: matplotlib is not installed (`pip install 'distillation-guard[report]'`, "
                           "or `./run`, whose environment has it).")
    else:
        plots, note = _plots(out_dir, evaluation, metrics), ""
    files += plots
    md = out_dir / "report.md"
    md.write_text(_markdown(metrics, meta, [p.name for p in plots], note))
    files.append(md)
    return files


def _markdown(m: dict[str, Any], meta: dict[str, Any], plots: list[str], note: str = "") -> str:
    lines = [
        "# Backtest report",
        "",
        f"Input `{meta.get('input')}`, labels `{meta.get('labels')}`, detector `{meta.get('detector_version')}`, "
        f"policy `{meta.get('policy_version')}` (the digest after `@` covers every setting that changes a decision; "
        "`metrics.json` lists them under `meta.detection_config`).",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| events | {m['events']} |",
        f"| accounts (distillation / benign / unlabelled) | {m['accounts']} ({m['distillation_accounts']} / "
        f"{m['benign_accounts']} / {m['unlabelled_accounts']}) |",
        f"| campaigns found | {m['campaigns_found']} of {m['campaigns']} |",
        f"| campaign recall | {_fmt(m['campaign_recall'])} |",
        f"| account recall | {_fmt(m['account_recall'])} |",
        f"| precision | {_fmt(m['precision'])} |",
        f"| benign false-positive rate | {_fmt(m['benign_fpr'], pct=True)} ({m['benign_false_positives']} accounts) |",
        f"| benign review load | {_fmt(m['benign_review_load'], pct=True)} ({m['benign_reviewed']} accounts) |",
        f"| median detection delay (share of campaign events) | {_fmt(m['median_delay_event_share'], pct=True)} |",
        f"| median detection delay (event-time minutes) | {_fmt(m['median_delay_minutes'])} |",
        "",
        "An account counts as flagged when a high or critical alert, or an action stronger than "
        "`flag_for_review`, names it; a benign account counts as reviewed when any alert or action names it "
        "(definitions in `pipeline/metrics.py`).",
        "",
        "## Campaigns",
        "",
        "| campaign | accounts | flagged | events | found | delay (share of events) | delay (minutes) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for camp, c in m["per_campaign"].items():
        lines.append(
            f"| {camp} | {c['accounts']} | {c['accounts_flagged']} | {c['events']} | "
            f"{'yes' if c['found'] else '**no**'} | {_fmt(c['delay_event_share'], pct=True)} | "
            f"{_fmt(c['delay_minutes'])} |"
        )
    lines += ["", "## By account tier", "", "| tier | distillation accounts | benign accounts | account recall | benign FPR |",
              "| --- | --- | --- | --- | --- |"]
    for tier, t in m["per_tier"].items():
        lines.append(f"| {tier} | {t['distillation_accounts']} | {t['benign_accounts']} | "
                     f"{_fmt(t['account_recall'])} | {_fmt(t['benign_fpr'], pct=True)} |")
    lines += ["", "## Plots", ""]
    lines += [f"![{name}]({name})\n" for name in plots] or [note]
    return "\n".join(lines) + "\n"


def _plots(out_dir: Path, ev: Evaluation, m: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "distillation-guard"
    written: list[Path] = []
    labelled = {a: lab for a, lab in ev.labels.items() if a in ev.account_events}
    distill = [a for a, (lab, _) in labelled.items() if lab == "distillation"]
    benign = [a for a, (lab, _) in labelled.items() if lab == "benign"]

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = [i / 20 for i in range(21)]
    ax.hist(ev.scores(benign), bins=bins, alpha=0.6, label=f"benign ({len(benign)})", color="tab:blue", log=True)
    ax.hist(ev.scores(distill), bins=bins, alpha=0.6, label=f"distillation ({len(distill)})", color="tab:red", log=True)
    ax.set_xlabel("highest alert score per account (0 = never alerted)")
    ax.set_ylabel("accounts (log)")
    ax.set_title("Score distribution: benign against campaign accounts")
    ax.legend()
    written.append(_save(fig, out_dir / "scores.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    curve = m["threshold_curve"]
    xs = [p["threshold"] for p in curve]
    ax.plot(xs, [p["precision"] if p["precision"] is not None else float("nan") for p in curve], label="precision")
    ax.plot(xs, [p["recall"] if p["recall"] is not None else float("nan") for p in curve], label="account recall")
    ax.plot(xs, [p["benign_fpr"] if p["benign_fpr"] is not None else float("nan") for p in curve],
            label="benign FPR")
    ax.set_xlabel("alert score threshold")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Precision and recall against the alert threshold")
    ax.legend()
    written.append(_save(fig, out_dir / "threshold.png"))

    camps = sorted(m["per_campaign"])
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * max(1, len(camps))))
    t0 = min(ev.campaign_first_ts.values(), default=0)
    for i, camp in enumerate(camps):
        start = (ev.campaign_first_ts.get(camp, t0) - t0) / 3.6e6
        flag = ev.campaign_first_flag.get(camp)
        flags = sorted((ts - t0) / 3.6e6 for ts, _, c in ev.flag_timeline if c == camp)
        ax.plot([start], [i], "o", color="grey")
        if flags:
            ax.plot(flags, [i] * len(flags), "|", color="tab:red", markersize=10)
        if flag:
            ax.plot([(flag[1] - t0) / 3.6e6], [i], "*", color="tab:red", markersize=12)
    ax.set_yticks(range(len(camps)), camps)
    ax.set_xlabel("event time, hours since the first campaign event (o first event, * first flag, | members flagged)")
    ax.set_title("Detection timeline per campaign")
    written.append(_save(fig, out_dir / "timeline.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
