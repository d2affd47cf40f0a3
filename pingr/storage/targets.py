"""The targets table: config targets reconciled at start, API targets added and changed."""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping

from sqlalchemy import text
from sqlmodel import Session, delete, select

from pingr.configbase import TargetBase
from pingr.models import Target
from pingr.probes.registry import parse_spec
from pingr.storage.schema import MINUTE, RAW, Schema
from pingr.storage.tables import PK_MASK, TargetRow

log = logging.getLogger(__name__)


class TargetRows(Schema):
    """Target rows of pingr.store.Store."""

    clock_ms: Callable[[], int]

    # ------------------------------------------------------------------ targets

    def load_targets(self, known: Mapping[str, tuple[str, TargetBase]] | None = None,
                     ) -> list[Target]:
        """Every stored target. `known`: name -> (spec JSON, spec) of specs already parsed (the
        config's); a row whose stored JSON is that spec's takes the same object, so a config
        target's spec is held once, not once for the config and once for the App."""
        assert self.engine is not None
        with Session(self.engine) as s:
            rows = s.exec(select(TargetRow).order_by(TargetRow.pk)).all()
        return [_to_target(r, known) for r in rows]

    def reconcile(self, specs: Iterable[TargetBase], clock_ms: int | None = None) -> list[Target]:
        """Make the config file's targets true in the database: add, update, disable removed.

        Targets created through the API are left alone. Returns every target.
        """
        assert self.engine is not None
        ts = clock_ms or self.clock_ms()
        wanted = {s.name: s for s in specs}
        known: dict[str, tuple[str, TargetBase]] = {}
        with Session(self.engine) as s:
            rows = {r.name: r for r in s.exec(select(TargetRow)).all()}
            for name, spec in wanted.items():
                data = spec.model_dump_json()
                known[name] = (data, spec)
                row = rows.get(name)
                if row is None:
                    s.add(_new_row(spec, "config", ts))
                elif row.spec != data or row.source != "config":
                    row.spec, row.type, row.enabled = data, spec.type, spec.enabled
                    row.source, row.updated_at = "config", ts
                    s.add(row)
            for name, row in rows.items():
                if row.source == "config" and name not in wanted and row.enabled:
                    spec = parse_spec({**json.loads(row.spec), "enabled": False})
                    row.spec, row.enabled, row.updated_at = spec.model_dump_json(), False, ts
                    s.add(row)
                    log.info("target %r is no longer in the config file: disabled", name)
            s.commit()
        return self.load_targets(known)

    @staticmethod
    def insert_target(session: Session, spec: TargetBase, source: str, ts: int) -> Target:
        row = _new_row(spec, source, ts)
        session.add(row)
        session.flush()
        if row.pk is not None and row.pk > PK_MASK:
            # Result ids carry the pk in 16 bits (see models.ID_SHIFT).
            raise ValueError(f"too many targets: pk {row.pk} exceeds {PK_MASK}")
        return _to_target(row)

    @staticmethod
    def update_target(session: Session, pk: int, spec: TargetBase, ts: int) -> Target:
        row = session.get(TargetRow, pk)
        assert row is not None
        row.name, row.type, row.enabled = spec.name, spec.type, spec.enabled
        row.spec, row.updated_at = spec.model_dump_json(), ts
        session.add(row)
        session.flush()
        return _to_target(row)

    def delete_target(self, session: Session, pk: int) -> None:
        session.exec(delete(TargetRow).where(TargetRow.pk == pk))
        # Results of a deleted target are history nobody can ask for any more.
        tables = [f"{kind}_d{day}" for kind in (RAW, MINUTE) for day in self._parts[kind]]
        for table in [*tables, "rollup_hour", "rollup_day"]:
            session.execute(text(f"DELETE FROM {table} WHERE target_pk = :pk"), {"pk": pk})


def _new_row(spec: TargetBase, source: str, ts: int) -> TargetRow:
    return TargetRow(
        id=str(uuid.uuid4()),
        name=spec.name,
        type=spec.type,
        enabled=spec.enabled,
        spec=spec.model_dump_json(),
        source=source,
        created_at=ts,
        updated_at=ts,
    )


def _to_target(row: TargetRow,
               known: Mapping[str, tuple[str, TargetBase]] | None = None) -> Target:
    assert row.pk is not None
    entry = known.get(row.name) if known else None
    return Target(
        pk=row.pk,
        id=row.id,
        spec=entry[1] if entry is not None and entry[0] == row.spec
        else parse_spec(json.loads(row.spec)),
        source=sys.intern(row.source),  # "config" or "api": one string, not one per target
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
