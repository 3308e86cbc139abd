"""Inline SVG charts drawn on the server: no script, no library, nothing fetched by the browser.

The campaign chart is a heat strip per member: one row per account, one cell per hour (or per few hours
when the campaign spans long), darker for more events. Relays show as rows that take turns; load
balancing as rows that rise and fall together.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

MAX_COLUMNS = 168
ROW_H, LABEL_W, CHART_W, AXIS_H = 12, 130, 680, 18


def _span(activity: dict[str, dict[int, int]]) -> tuple[int, int, int] | None:
    hours = [h for per in activity.values() for h in per]
    if not hours:
        return None
    first, last = min(hours), max(hours)
    step = max(1, -(-(last - first + 1) // MAX_COLUMNS))  # hours per column
    return first, last, step


def _hour_label(hour: int) -> str:
    return datetime.fromtimestamp(hour * 3600, UTC).strftime("%m-%d %H:00")


def activity_heatmap(activity: dict[str, dict[int, int]]) -> str:
    """Events per hour per member as an SVG heat strip; a sentence when no activity is stored."""
    span = _span(activity)
    if span is None:
        return ("<p class=muted>No activity stored for these accounts (the console reads it from "
                "<code>usage-events</code>, or from a run's events file).</p>")
    first, last, step = span
    columns = (last - first) // step + 1
    cell = CHART_W / columns
    binned = {acct: _bin(per, first, step) for acct, per in activity.items()}
    peak = max((n for per in binned.values() for n in per.values()), default=1) or 1
    height = AXIS_H + ROW_H * len(activity)
    parts = [f'<svg class=chart role=img width="{LABEL_W + CHART_W}" height="{height}" '
             f'viewBox="0 0 {LABEL_W + CHART_W} {height}" aria-label="events per hour per member">']
    for i, (acct, per) in enumerate(binned.items()):
        y = AXIS_H + i * ROW_H
        parts.append(f'<text x="0" y="{y + ROW_H - 2}" class=lbl>{escape(acct)}</text>')
        for col, n in per.items():
            shade = 0.15 + 0.85 * n / peak
            parts.append(f'<rect x="{LABEL_W + col * cell:.1f}" y="{y}" width="{max(cell, 1):.1f}" '
                         f'height="{ROW_H - 1}" fill-opacity="{shade:.2f}"><title>{escape(acct)} '
                         f'{_hour_label(first + col * step)}: {n} events</title></rect>')
    parts.append(f'<text x="{LABEL_W}" y="12" class=lbl>{_hour_label(first)} UTC</text>')
    parts.append(f'<text x="{LABEL_W + CHART_W}" y="12" class=lbl text-anchor="end">{_hour_label(last)} · '
                 f'{step} h per cell · darkest {peak} events</text></svg>')
    return "".join(parts)


def _bin(per: dict[int, int], first: int, step: int) -> dict[int, int]:
    out: dict[int, int] = {}
    for hour, n in per.items():
        col = (hour - first) // step
        out[col] = out.get(col, 0) + n
    return out


def bars(values: list[tuple[str, float]], width: int = 160) -> str:
    """Small horizontal bars, one per (label, value in [0, 1])."""
    out = []
    for label, v in values:
        w = max(0.0, min(1.0, v)) * width
        out.append(f'<svg width="{width}" height="10" role=img aria-label="{escape(label)}">'
                   f'<rect width="{width}" height="10" class=track /><rect width="{w:.1f}" height="10" />'
                   f"</svg>")
    return "".join(out)
