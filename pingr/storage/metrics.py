"""Metric series (host and container CPU, memory, disk, network, temperature) kept over time.

A sample is counted into the same per-minute aggregate as a probe result (count, sum, min,
max), under the series' own key above every target's pk (`SERIES_BASE + pk`): it rides the
results' batched commit, sits on the pages the commit writes anyway (rows are ordered by
minute, then key), and shares their retention (minutes `minute_retention`, hours
`hour_retention`) and the size cap. Nothing is written per sample; values are integers
(the caller scales them, e.g. hundredths of a percent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from sqlmodel import Session, select

from pingr.storage import rollup
from pingr.storage.tables import SERIES_BASE, MetricSeriesRow
from pingr.storage.writer import Writer

log = logging.getLogger(__name__)


class MetricSeries(Writer):
    """Metric series of pingr.store.Store: their names, their samples, their history."""

    #: series key -> pk in the rollup tables (SERIES_BASE + row pk)
    _series: dict[str, int]
    #: pingr.storage.queries.Queries.history (a sibling part of Store)
    history: Callable[[int, int, int, str], list[tuple[Any, ...]]]

    def load_series(self) -> dict[str, int]:
        """Every known series (read at start; later ones are added by `series_ids`)."""
        assert self.engine is not None
        with Session(self.engine) as s:
            self._series = {r.key: SERIES_BASE + (r.pk or 0)
                            for r in s.exec(select(MetricSeriesRow)).all()}
        return dict(self._series)

    def known_series(self, prefix: str = "") -> dict[str, int]:
        return {k: v for k, v in self._series.items() if k.startswith(prefix)}

    async def series_ids(self, keys: Iterable[str], ts: int) -> dict[str, int]:
        """The rollup pk of each key, creating the series not seen before (a write only then)."""
        keys = list(keys)
        missing = [k for k in keys if k not in self._series]
        if missing:
            def work(s: Session) -> dict[str, int]:
                rows = {r.key: r for r in s.exec(select(MetricSeriesRow).where(
                    MetricSeriesRow.key.in_(missing))).all()}
                for key in missing:
                    if key not in rows:
                        rows[key] = MetricSeriesRow(key=key, created_at=ts)
                        s.add(rows[key])
                s.flush()
                return {k: SERIES_BASE + (r.pk or 0) for k, r in rows.items()}

            self._series.update(await self.write(work))
        return {k: self._series[k] for k in keys}

    def add_samples(self, ts: int, values: dict[int, int]) -> None:
        """Count one sample of each series (pk -> integer value) into its minute (no I/O)."""
        bucket = ts - ts % rollup.MINUTE_MS
        with self._lock:
            for pk, value in values.items():
                rollup.add(self._rollups, bucket, pk, True, value)
        self._poke()

    def series_history(self, pk: int, since: int, until: int, resolution: str
                       ) -> list[tuple[int, int, int | None, int | None, int | None]]:
        """(bucket, samples, average, min, max) of one series, oldest first; committed and
        buffered samples alike."""
        rows = self.history(pk, since, until, resolution)
        return [(b, n, round(lsum / ln) if ln else None, lo, hi)
                for b, n, _ok, ln, lsum, lo, hi in rows]
