"""Robustness matrix: the detector against every scenario variant, benign look-alikes and evasive campaigns.

    python bench/robustness.py [--scenarios ...] [--seeds 1 2 3] [--scale 1.0] [--jobs 2]
                               [--set NAME=VALUE ...] [--out docs/robustness.md]

Default: standard, hard, every ``standard+<population>`` variant and realistic, seeds 1 2 3. Each run
simulates, replays through the detection engine in process and scores against labels
(``pipeline.offline.robustness``). One table row per scenario, pessimistic over seeds; below it, per scenario,
the benign populations with flagged or reviewed accounts and the campaigns with recall below 1.
``--set`` overrides ``DetectionConfig`` fields (ints, floats and booleans parsed) for ablations.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.offline.robustness import run_variant, summarise  # noqa: E402
from pipeline.simulate import SCENARIOS  # noqa: E402

DEFAULT_SCENARIOS = ["standard", "hard", *(s for s in SCENARIOS if s.startswith("standard+")), "realistic"]


def parse_value(text: str) -> Any:
    """``true``/``false`` as bools, then int, then float, else the string itself."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs into a ``DetectionConfig`` override mapping."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--set wants NAME=VALUE, got {item!r}")
        out[name.strip()] = parse_value(value.strip())
    return out


def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def num(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def table(summary: list[dict[str, Any]]) -> str:
    """The Markdown table and, per scenario, the crowds hit and the campaigns missed."""
    lines = [
        "| scenario | campaigns found | account recall (mean / min) | benign FPR (max, count) | "
        "benign review load (max, count) | precision (min) | median delay (max) | campaign ids per campaign "
        "(max) | conflated |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summary:
        lines.append(
            f"| {s['scenario']} | {s['campaigns_found']}/{s['campaigns']} | {num(s['account_recall_mean'])} / "
            f"{num(s['account_recall_min'])} | {pct(s['benign_fpr_max'])} ({s['benign_fp_at_max']}) | "
            f"{pct(s['benign_review_load_max'])} ({s['benign_reviewed_max']}) | {num(s['precision_min'])} | "
            f"{pct(s['median_delay_max'])} | {s.get('campaign_ids_max', '–')} | {s.get('campaigns_conflated', '–')} |"
        )
    details = []
    for s in summary:
        pops = ", ".join(
            f"{p['population']} {p['flagged']} flagged / {p['reviewed']} reviewed of {p['accounts']}"
            for p in s["populations"]
        )
        missed = ", ".join(
            f"{c['campaign']} (seed {c['seed']}) {c['flagged']}/{c['accounts']}" for c in s["missed"]
        )
        details.append(f"- **{s['scenario']}** (seeds {' '.join(map(str, s['seeds']))}): benign crowds hit: "
                       f"{pops or 'none'}; campaigns with recall < 1: {missed or 'none'}")
    return "\n".join(lines) + "\n\n" + "\n".join(details)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", nargs="+", default=DEFAULT_SCENARIOS, choices=sorted(SCENARIOS),
                    metavar="SCENARIO")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                    help="override a DetectionConfig field (repeatable)")
    ap.add_argument("--out", type=Path, help="write the table (Markdown) here and the raw rows as JSON beside it")
    args = ap.parse_args()
    overrides = parse_sets(args.sets)
    tasks = [(s, seed) for s in args.scenarios for seed in args.seeds]
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run_variant, s, seed, args.scale, overrides): (s, seed) for s, seed in tasks}
        for fut in as_completed(futures):
            r = fut.result()
            rows.append(r)
            print(f"[{len(rows)}/{len(tasks)} {time.perf_counter() - start:.0f}s] {r['scenario']} seed {r['seed']}: "
                  f"{r['events']} events, generate {r['generate_s']:.0f}s, detect {r['detect_s']:.0f}s",
                  file=sys.stderr, flush=True)
    order = {t: i for i, t in enumerate(tasks)}
    rows.sort(key=lambda r: order[(r["scenario"], r["seed"])])
    text = table(summarise(rows))
    print(text)
    if args.out:
        command = shlex.join(["python", "bench/robustness.py", *sys.argv[1:]])
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"# Robustness matrix\n\n`{command}` on {when}\n\n{text}\n")
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
