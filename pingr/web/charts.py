"""Charts as inline SVG, drawn on the server: no chart library, no JavaScript, no request.

Colours come from CSS classes (the page's light and dark themes); every chart has a text
alternative (`role="img"` with a <title>) saying what it shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from pingr.timeutil import from_ms

#: One aggregated bucket: (start ms, count, successes, lat_count, lat_sum, lat_min, lat_max).
Bucket = tuple[int, int, int, int, int, int | None, int | None]


def level(count: int, successes: int) -> str:
    """The CSS class of a bucket's uptime: ok, part (some failures), bad (all failed), none."""
    if not count:
        return "none"
    if successes == count:
        return "ok"
    return "bad" if successes == 0 else "part"


def fold(buckets: Sequence[Bucket], start: int, size: int, n: int) -> list[Bucket | None]:
    """`n` buckets of `size` ms from `start`, each the sum of the given buckets inside it."""
    out: list[list[int | None] | None] = [None] * n
    for b in buckets:
        i = (b[0] - start) // size
        if not 0 <= i < n:
            continue
        cur = out[i]
        if cur is None:
            out[i] = [start + i * size, *b[1:]]
            continue
        for j in (1, 2, 3, 4):
            cur[j] = (cur[j] or 0) + b[j]  # type: ignore[operator]
        for j, pick in ((5, min), (6, max)):
            if b[j] is not None:
                cur[j] = b[j] if cur[j] is None else pick(cur[j], b[j])  # type: ignore[type-var]
    return [tuple(x) if x is not None else None for x in out]  # type: ignore[misc]


def _avg(b: Bucket) -> float | None:
    return b[4] / b[3] if b[3] else None


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _line(points: list[tuple[float, float] | None]) -> str:
    """An SVG path through the points; None breaks the line (no data there), and a point
    alone between gaps becomes a short dash so that it shows."""
    segments: list[list[tuple[float, float]]] = [[]]
    for p in points:
        if p is None:
            if segments[-1]:
                segments.append([])
        else:
            segments[-1].append(p)
    parts = []
    for seg in segments:
        if len(seg) == 1:
            x, y = seg[0]
            parts.append(f"M{_num(x - 1.5)} {_num(y)}h3")
        elif seg:
            parts.append("M" + "L".join(f"{_num(x)} {_num(y)}" for x, y in seg))
    return "".join(parts)


def sparkline(buckets: Sequence[Bucket | None], label: str) -> str:
    """A 120×28 sparkline: average latency as a line, failing periods as marks below it."""
    n = len(buckets)
    if not n or all(b is None or not b[1] for b in buckets):
        return ('<svg class="spark" viewBox="0 0 120 28" role="img" aria-label="'
                f'{escape(label)}: no data yet"><title>{escape(label)}: no data yet</title>'
                '<path class="base" d="M0 26H120"/></svg>')
    step = 120 / n
    avgs = [(_avg(b) if b else None) for b in buckets]
    top = max((a for a in avgs if a is not None), default=0) or 1
    points = [None if a is None else (i * step + step / 2, 21 - 18 * a / top)
              for i, a in enumerate(avgs)]
    marks = []
    failing = 0
    for i, b in enumerate(buckets):
        if b is None or not b[1] or b[2] == b[1]:
            continue
        failing += 1
        marks.append(f'<rect class="{level(b[1], b[2])}" x="{_num(i * step)}" y="24" '
                     f'width="{_num(max(step - 0.5, 1))}" height="4"/>')
    known = [a for a in avgs if a is not None]
    summary = (f"{label}: latency {round(min(known))} to {round(max(known))} ms"
               if known else f"{label}: no successful probe")
    if failing:
        summary += f"; failures in {failing} of {n} periods"
    return (f'<svg class="spark" viewBox="0 0 120 28" role="img" aria-label="{escape(summary)}">'
            f'<title>{escape(summary)}</title><path class="base" d="M0 26H120"/>'
            f'<path class="lat" d="{_line(points)}"/>{"".join(marks)}</svg>')


def _clock(ms: int, with_date: bool) -> str:
    return from_ms(ms).strftime("%m-%d %H:%M" if with_date else "%H:%M")


def history(buckets: Sequence[Bucket | None], start: int, size: int, label: str) -> str:
    """The target page's chart: latency (average line, min–max band) over time, and a strip
    of up/down below it, one cell per bucket; times in UTC."""
    n = len(buckets)
    w, top, bottom, strip = 600.0, 12.0, 128.0, 140.0
    left = 44.0
    plot = w - left - 4
    step = plot / max(n, 1)
    highs = [b[6] for b in buckets if b is not None and b[6] is not None]
    avgs = [(_avg(b) if b else None) for b in buckets]
    peak = max([*highs, *(a for a in avgs if a is not None), 1])

    def y(v: float) -> float:
        return bottom - (bottom - top) * v / peak

    def x(i: int) -> float:
        return left + i * step + step / 2

    line = _line([None if a is None else (x(i), y(a)) for i, a in enumerate(avgs)])
    band = []
    run: list[int] = []
    for i, b in enumerate([*buckets, None]):
        if b is not None and b[5] is not None and b[6] is not None:
            run.append(i)
            continue
        if run:
            upper = [f"{_num(x(j))} {_num(y(buckets[j][6]))}" for j in run]  # type: ignore[index]
            lower = [f"{_num(x(j))} {_num(y(buckets[j][5]))}" for j in reversed(run)]  # type: ignore[index]
            band.append(f'<path class="band" d="M{"L".join(upper + lower)}Z"/>')
            run = []
    cells = []
    down = 0
    for i, b in enumerate(buckets):
        cls = level(b[1], b[2]) if b is not None else "none"
        down += cls in ("part", "bad")
        cells.append(f'<rect class="{cls}" x="{_num(left + i * step)}" y="{_num(strip)}" '
                     f'width="{_num(max(step - (0.6 if n < 200 else 0), 0.6))}" height="14"/>')
    with_date = n * size > 86_400_000
    end = start + n * size
    ticks = "".join(
        f'<text class="ax" x="{_num(left + plot * f)}" y="170" text-anchor="{a}">'
        f"{_clock(start + int((end - start) * f), with_date)}</text>"
        for f, a in ((0, "start"), (0.5, "middle"), (1, "end")))
    known = [a for a in avgs if a is not None]
    summary = (f"{label}: average latency {round(sum(known) / len(known))} ms, peak "
               f"{round(peak)} ms; failures in {down} of {n} periods" if known
               else f"{label}: no successful probe in this window")
    return (
        f'<svg class="chart" viewBox="0 0 {int(w)} 176" role="img" '
        f'aria-label="{escape(summary)}"><title>{escape(summary)}</title>'
        f'<path class="grid" d="M{left} {top}H{w - 4}M{left} {(top + bottom) / 2}H{w - 4}'
        f'M{left} {bottom}H{w - 4}"/>'
        f'<text class="ax" x="{left - 4}" y="{top + 4}" text-anchor="end">{round(peak)} ms</text>'
        f'<text class="ax" x="{left - 4}" y="{bottom + 4}" text-anchor="end">0</text>'
        f'{"".join(band)}<path class="lat" d="{line}"/>'
        f'<text class="ax" x="{left - 4}" y="{strip + 11}" text-anchor="end">up</text>'
        f'{"".join(cells)}{ticks}</svg>'
    )


def day_level(count: int, successes: int) -> str:
    """A status-page day: ok from 99.9% up, part from 99%, bad below; none without probes
    (one failed probe in a day of 1,440 is no outage, and must not look like one)."""
    if not count:
        return "none"
    pct = 100 * successes / count
    return "ok" if pct >= 99.9 else "part" if pct >= 99.0 else "bad"


def uptime_bars(days: Sequence[tuple[str, int, int]], label: str) -> str:
    """The status page's bars: one per UTC day, (date, count, successes), oldest first."""
    n = len(days)
    width = n * 4
    rects = []
    total = ok = 0
    for i, (date, count, successes) in enumerate(days):
        total += count
        ok += successes
        text = (f"{date}: {100 * successes / count:.2f}% up" if count else f"{date}: no data")
        rects.append(f'<rect class="{day_level(count, successes)}" x="{i * 4}" y="0" width="3" '
                     f'height="24" rx="1"><title>{text}</title></rect>')
    summary = (f"{label}: {100 * ok / total:.2f}% up over {n} days" if total
               else f"{label}: no data over {n} days")
    return (f'<svg class="bars" viewBox="0 0 {width} 24" preserveAspectRatio="none" role="img" '
            f'aria-label="{escape(summary)}"><title>{escape(summary)}</title>'
            f'{"".join(rects)}</svg>')
