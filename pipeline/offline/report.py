"""The backtest report: ``metrics.json`` and ``accounts.json`` for machines; ``report.md`` with PNG plots and a
self-contained ``report.html`` for people; and the comparison of two reports (``compare``)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from pipeline.offline.evaluation import Evaluation


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{100 * v:.2f}%" if pct else f"{v:.3f}"
    return str(v)


LISTED = 100
"""Rows of each account list in report.md / report.html (accounts.json has them all)."""


def write_report(out_dir: Path, evaluation: Evaluation, metrics: dict[str, Any], meta: dict[str, Any]) -> list[Path]:
    """Write metrics.json, accounts.json, the plots, report.md and a self-contained report.html into
    ``out_dir``; return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / "metrics.json", out_dir / "accounts.json"]
    files[0].write_text(json.dumps({"meta": meta, **metrics}, indent=2, sort_keys=True) + "\n")
    accounts = evaluation.accounts()
    files[1].write_text(json.dumps(accounts, indent=1, sort_keys=True) + "\n")
    try:
        import matplotlib  # noqa: F401  (the report extra: the worker's image does not install it)
    except ImportError:
        plots, note = [], ("No plots: matplotlib is not installed (`pip install 'distillation-guard[report]'`, "
                           "or `./run`, whose environment has it).")
    else:
        plots, note = _plots(out_dir, evaluation, {"meta": meta, **metrics}), ""
    files += plots
    sections = _sections(metrics, meta, accounts)
    md = out_dir / "report.md"
    md.write_text(_markdown(sections, [p.name for p in plots], note))
    html = out_dir / "report.html"
    html.write_text(_html(sections, plots, note))
    files += [md, html]
    return files


Section = dict[str, Any]
"""``title``, ``text`` (paragraphs), and optionally a table: ``header`` and ``rows`` (lists of cells)."""


def _sections(m: dict[str, Any], meta: dict[str, Any], accounts: dict[str, list[dict[str, Any]]]) -> list[Section]:
    """The report's content, once, for both renderings."""
    return [_summary(m, meta), _campaigns(m, accounts), _flagged_not_distillation(accounts),
            _missed(accounts), _tiers(m)]


def _summary(m: dict[str, Any], meta: dict[str, Any]) -> Section:
    """What ran on what, and the headline figures."""
    return {
        "title": "Summary",
        "text": [f"Input `{meta.get('input')}`, labels `{meta.get('labels')}`, detector "
                 f"`{meta.get('detector_version')}`, policy `{meta.get('policy_version')}` (the digest after `@` "
                 "covers every setting that changes a decision; `metrics.json` lists them under "
                 "`meta.detection_config`).",
                 "An account counts as flagged when a high or critical alert, or an action stronger than "
                 "`flag_for_review`, names it; a benign account counts as reviewed when any alert or action names "
                 "it (definitions in `pipeline/offline/evaluation.py`)."],
        "header": ["metric", "value"],
        "rows": [
            ["events", m["events"]],
            ["accounts (distillation / benign / unlabelled)", f"{m['accounts']} ({m['distillation_accounts']} / "
             f"{m['benign_accounts']} / {m['unlabelled_accounts']})"],
            ["campaigns found", f"{m['campaigns_found']} of {m['campaigns']}"],
            ["campaign recall", _fmt(m["campaign_recall"])],
            ["account recall", _fmt(m["account_recall"])],
            ["precision", _fmt(m["precision"])],
            ["benign false-positive rate", f"{_fmt(m['benign_fpr'], pct=True)} ({m['benign_false_positives']} accounts)"],
            ["benign review load", f"{_fmt(m['benign_review_load'], pct=True)} ({m['benign_reviewed']} accounts)"],
            ["median detection delay (share of campaign events)", _fmt(m["median_delay_event_share"], pct=True)],
            ["median detection delay (event-time minutes)", _fmt(m["median_delay_minutes"])],
        ],
    }


def _campaigns(m: dict[str, Any], accounts: dict[str, list[dict[str, Any]]]) -> Section:
    """Each labelled campaign: members found and missed, delay, and the detected campaign ids."""
    detected: dict[str, set[str]] = {}
    for a in accounts["flagged"]:
        if a["campaign"]:
            detected.setdefault(a["campaign"], set()).update(a["detected_campaigns"])
    return {
        "title": "Campaigns",
        "text": ["Each labelled campaign, the members found and missed, and the detected campaign ids that named "
                 "its members (after merges: one id means it was seen as one campaign)."],
        "header": ["campaign", "accounts", "flagged", "missed", "events", "found", "delay (share of events)",
                   "delay (minutes)", "detected campaign ids"],
        "rows": [[camp, c["accounts"], c["accounts_flagged"], c["accounts"] - c["accounts_flagged"], c["events"],
                  "yes" if c["found"] else "NO", _fmt(c["delay_event_share"], pct=True), _fmt(c["delay_minutes"]),
                  ", ".join(sorted(detected.get(camp, ()))) or "–"]
                 for camp, c in m["per_campaign"].items()],
    }


def _flagged_not_distillation(accounts: dict[str, list[dict[str, Any]]]) -> Section:
    """Benign and unlabelled accounts flagged, with the reasons of the output that first flagged each."""
    false = [a for a in accounts["flagged"] if a["label"] != "distillation"]
    return {
        "title": f"Benign and unlabelled accounts flagged ({len(false)})",
        "text": [f"The first {LISTED} (all in `accounts.json`), with the reasons of the output that first "
                 "flagged each." if len(false) > LISTED else "With the reasons of the output that first flagged each."],
        "header": ["account", "label", "events", "reasons", "detected campaign ids"],
        "rows": [[a["account_id"], a["label"], a["events"], ", ".join(a["reasons"]),
                  ", ".join(a["detected_campaigns"]) or "–"] for a in false[:LISTED]],
    }


def _missed(accounts: dict[str, list[dict[str, Any]]]) -> Section:
    """Campaign accounts missed, with their highest alert score."""
    missed = accounts["missed"]
    return {
        "title": f"Campaign accounts missed ({len(missed)})",
        "text": [f"The first {LISTED} (all in `accounts.json`); the highest alert score shows how close each came."
                 if len(missed) > LISTED else "The highest alert score shows how close each came."],
        "header": ["account", "campaign", "events", "highest alert score", "named in campaigns"],
        "rows": [[a["account_id"], a["campaign"], a["events"], a["max_alert_score"],
                  ", ".join(a["detected_campaigns"]) or "–"] for a in missed[:LISTED]],
    }


def _tiers(m: dict[str, Any]) -> Section:
    """Recall and benign false-positive rate per account tier."""
    return {
        "title": "By account tier", "text": [],
        "header": ["tier", "distillation accounts", "benign accounts", "account recall", "benign FPR"],
        "rows": [[tier, t["distillation_accounts"], t["benign_accounts"], _fmt(t["account_recall"]),
                  _fmt(t["benign_fpr"], pct=True)] for tier, t in m["per_tier"].items()],
    }


def _markdown(sections: list[Section], plots: list[str], note: str = "") -> str:
    lines = ["# Backtest report", ""]
    for sec in sections:
        lines += [f"## {sec['title']}", ""]
        for para in sec["text"]:
            lines += [para, ""]
        if sec.get("rows"):
            lines += ["| " + " | ".join(sec["header"]) + " |", "|" + " --- |" * len(sec["header"])]
            lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in sec["rows"]]
            lines.append("")
    lines += ["## Plots", ""]
    lines += [f"![{name}]({name})\n" for name in plots] or [note]
    return "\n".join(lines) + "\n"


_CSS = ("body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;"
        "text-align:left;vertical-align:top}th{background:#f2f2f2}tr:nth-child(even) td{background:#fafafa}"
        "code{background:#f2f2f2;padding:0 .2em}img{max-width:100%;border:1px solid #ddd;margin:.5em 0}")


def _inline(text: str) -> str:
    """Escape, then `code` spans as <code>."""
    parts = html.escape(str(text)).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _html(sections: list[Section], plots: list[Path], note: str = "") -> str:
    """One file, no external asset (the plots are inlined as data URIs): opens anywhere, offline."""
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>Backtest report</title>", f"<style>{_CSS}</style></head><body>", "<h1>Backtest report</h1>"]
    for sec in sections:
        out.append(f"<h2>{_inline(sec['title'])}</h2>")
        out += [f"<p>{_inline(para)}</p>" for para in sec["text"]]
        if sec.get("rows"):
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in sec["header"])
                       + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in sec["rows"]]
            out.append("</tbody></table>")
    out.append("<h2>Plots</h2>")
    for path in plots:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        out.append(f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">')
    if not plots:
        out.append(f"<p>{_inline(note)}</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _plots(out_dir: Path, ev: Evaluation, m: dict[str, Any]) -> list[Path]:
    """The three PNG plots (scores, threshold, timeline) in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "distillation-guard"
    labelled = {a: lab for a, lab in ev.labels.items() if a in ev.account_events}
    distill = [a for a, (lab, _) in labelled.items() if lab == "distillation"]
    benign = [a for a, (lab, _) in labelled.items() if lab == "benign"]
    return [
        _scores_plot(out_dir / "scores.png", ev.harvest, distill, benign, m),
        _threshold_plot(out_dir / "threshold.png", ev.harvest, distill, benign),
        _timeline_plot(out_dir / "timeline.png", ev, m),
    ]


def _scores_plot(path: Path, harvest: dict[str, float], distill: list[str], benign: list[str],
                 m: dict[str, Any]) -> Path:
    """Every account's own harvest score (the highest at any window update, alerting or not), so the margin
    between benign and campaign accounts shows, and one scale: campaign scores are another judgement."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = [i / 40 for i in range(41)]
    ax.hist([harvest.get(a, 0.0) for a in benign], bins=bins, alpha=0.6, label=f"benign ({len(benign)})",
            color="tab:blue", log=True)
    ax.hist([harvest.get(a, 0.0) for a in distill], bins=bins, alpha=0.6, label=f"distillation ({len(distill)})",
            color="tab:red", log=True)
    for name, t in (("medium", meta_cfg(m, "account_medium")), ("high", meta_cfg(m, "account_high"))):
        if t is not None:
            ax.axvline(t, color="grey", linestyle="--", linewidth=1)
            ax.text(t, ax.get_ylim()[1], f" {name}", va="top", fontsize=8, color="grey")
    ax.set_xlabel("account-level harvest score (highest per account over the run)")
    ax.set_ylabel("accounts (log)")
    ax.set_title("Own-behaviour score: benign against campaign accounts")
    ax.legend()
    return _save(fig, path)


def _threshold_plot(path: Path, harvest: dict[str, float], distill: list[str], benign: list[str]) -> Path:
    """The share of campaign and of benign accounts whose own score reaches each account-level threshold."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [i / 40 for i in range(41)]
    d_set, b_set = set(distill), set(benign)
    recall, fpr = [], []
    for t in xs:
        hit = {a for a, s in harvest.items() if s >= t}
        recall.append(len(hit & d_set) / len(d_set) if d_set else float("nan"))
        fpr.append(len(hit & b_set) / len(b_set) if b_set else float("nan"))
    ax.plot(xs, recall, label="campaign accounts reaching it (own behaviour alone)")
    ax.plot(xs, fpr, label="benign accounts reaching it")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("account-level threshold (DG_ACCOUNT_HIGH is the one that flags)")
    ax.set_ylim(0, 1.05)
    ax.set_title("Who reaches an account-level threshold (campaigns aside)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _timeline_plot(path: Path, ev: Evaluation, m: dict[str, Any]) -> Path:
    """Per campaign, in event time: its first event, its first flag and each member flagged."""
    import matplotlib.pyplot as plt

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
    return _save(fig, path)


def meta_cfg(m: dict[str, Any], name: str) -> float | None:
    """A detection setting recorded in the report's metrics (``meta.detection_config``), if any."""
    value = ((m.get("meta") or {}).get("detection_config") or {}).get(name)
    return float(value) if isinstance(value, int | float) else None


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


class CompareError(ValueError):
    """A report directory that cannot be compared (missing or unreadable files), said plainly."""


def _load_run(run: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        metrics = json.loads((run / "metrics.json").read_text())
        accounts = json.loads((run / "accounts.json").read_text())
    except FileNotFoundError as exc:
        raise CompareError(f"{run}: no {Path(exc.filename).name}: give a directory that backtest --report "
                           "wrote") from exc
    except (OSError, ValueError) as exc:
        raise CompareError(f"{run}: cannot read its report: {exc}") from exc
    return metrics, accounts


def compare(run_a: Path, run_b: Path, listed: int = 50) -> str:
    """What changed from report ``run_a`` to ``run_b`` (two ``backtest --report`` directories): the
    settings that differ, the figures, and the accounts flagged in one run only, with their labels and
    reasons: what a threshold change would have done, account by account."""
    (ma, aa), (mb, ab) = _load_run(run_a), _load_run(run_b)
    ca, cb = ma["meta"].get("detection_config") or {}, mb["meta"].get("detection_config") or {}
    lines = [f"A: {run_a}  policy {ma['meta'].get('policy_version')}",
             f"B: {run_b}  policy {mb['meta'].get('policy_version')}", ""]
    changed = sorted(k for k in set(ca) | set(cb) if ca.get(k) != cb.get(k))
    lines.append("settings that differ: " + (", ".join(f"{k} {ca.get(k)!r} -> {cb.get(k)!r}" for k in changed)
                                             or "none"))
    lines.append("")
    figures = [("campaigns found", "campaigns_found", False), ("account recall", "account_recall", False),
               ("precision", "precision", False), ("benign FPR", "benign_fpr", True),
               ("benign review load", "benign_review_load", True),
               ("median delay (share of events)", "median_delay_event_share", True)]
    width = max(len(name) for name, _, _ in figures)
    for name, key, pct in figures:
        lines.append(f"{name:<{width}}  {_fmt(ma.get(key), pct):>10}  ->  {_fmt(mb.get(key), pct):>10}")
    flags_a = {a["account_id"]: a for a in aa["flagged"]}
    flags_b = {a["account_id"]: a for a in ab["flagged"]}
    for title, only, other in (("flagged in A only", flags_a, flags_b), ("flagged in B only", flags_b, flags_a)):
        ids = sorted(set(only) - set(other))
        by_label: dict[str, int] = {}
        for acc in ids:
            by_label[only[acc]["label"]] = by_label.get(only[acc]["label"], 0) + 1
        counts = ", ".join(f"{n} {label}" for label, n in sorted(by_label.items()))
        lines += ["", f"{title}: {len(ids)}" + (f" ({counts})" if ids else "")]
        for acc in ids[:listed]:
            a = only[acc]
            lines.append(f"  {acc}  {a['label']}{' ' + a['campaign'] if a.get('campaign') else ''}  "
                         f"reasons: {', '.join(a['reasons']) or '-'}")
        if len(ids) > listed:
            lines.append(f"  … and {len(ids) - listed} more (accounts.json)")
    return "\n".join(lines) + "\n"
