"""Automatic certificate checks: one `tls` target per host:port that HTTPS targets use.

Every enabled `https://` target gets its certificate watched (days left, warning at
`warn_days`, down at expiry) without a line of config. Targets sharing a host:port share one
check; a `tls` target the user wrote for that host:port replaces it. The checks are stored
targets (source `auto`: history, uptime, alerts like any other) that follow their HTTPS
targets: added, changed and deleted with them, never through the API.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session

from pingr.models import Target
from pingr.probes.tls import TlsTarget, tls_target_for
from pingr.store import Store

log = logging.getLogger(__name__)

#: Target.source of an automatic certificate check.
AUTO = "auto"

Key = tuple[str, int]


def certificate_name(host: str, port: int) -> str:
    """`nas.home.arpa certificate`, `[fd00::5]:8443 certificate` (fits the 100-character
    name limit)."""
    shown = f"[{host}]" if ":" in host else host
    if port != 443:
        shown = f"{shown}:{port}"
    return f"{shown[:88]} certificate"


def _key(spec: TlsTarget) -> Key:
    return spec.host.lower(), spec.port


def _interval(http_spec: Any) -> int:
    spec = tls_target_for(http_spec)
    assert spec is not None
    return spec.interval_seconds


def wanted(targets: Iterable[Target]) -> dict[Key, TlsTarget]:
    """The checks the HTTPS targets call for, by host:port.

    Of several HTTPS targets on one host:port: verified if any verifies, enabled if any is,
    every tag, the shortest interval (never under an hour, see HTTPS_CERT_INTERVAL), their
    common `depends_on` if they share one. Host:ports a user's own `tls` target checks and
    names a user's target already has are left out.
    """
    targets = sorted(targets, key=lambda t: t.name.lower())
    explicit = {_key(t.spec) for t in targets
                if t.spec.type == "tls" and t.source != AUTO}
    taken = {t.name for t in targets if t.source != AUTO}
    groups: dict[Key, list[Any]] = {}
    for target in targets:
        if target.spec.type != "http" or target.source == AUTO:
            continue
        spec = tls_target_for(target.spec)
        if spec is None or _key(spec) in explicit:
            continue
        groups.setdefault(_key(spec), []).append(target.spec)
    out: dict[Key, TlsTarget] = {}
    for (host, port), https in groups.items():
        name = certificate_name(host, port)
        if name in taken:
            log.warning("no automatic certificate check for %s:%d: a target is already named "
                        "%r", host, port, name)
            continue
        parents = {h.depends_on for h in https}
        spec = tls_target_for(
            https[0], name=name,
            verify=any(h.verify_tls for h in https),
            enabled=any(h.enabled for h in https),
            tags=sorted({tag for h in https for tag in h.tags}),
            depends_on=parents.pop() if len(parents) == 1 else None,
            interval_seconds=min(_interval(h) for h in https),
        )
        assert spec is not None
        out[(host, port)] = spec
    return out


@dataclass
class Plan:
    """What to change so that the stored automatic checks are the wanted ones."""

    add: list[TlsTarget] = field(default_factory=list)
    change: list[tuple[Target, TlsTarget]] = field(default_factory=list)
    remove: list[Target] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.add or self.change or self.remove)


def plan(targets: Iterable[Target]) -> Plan:
    """Compare the automatic checks among `targets` with what their HTTPS targets want."""
    targets = list(targets)
    want = wanted(targets)
    have: dict[Key, Target] = {}
    out = Plan()
    for target in targets:
        if target.source != AUTO:
            continue
        key = _key(target.spec)
        if key in want and key not in have:
            have[key] = target
        else:
            out.remove.append(target)  # no HTTPS target left for it (or a duplicate)
    for key, spec in want.items():
        current = have.get(key)
        if current is None:
            out.add.append(spec)
        elif current.spec != spec:
            out.change.append((current, spec))
    return out


def apply(store: Store, session: Session, todo: Plan, ts: int
          ) -> tuple[list[Target], list[Target]]:
    """Carry out a plan in one database session (on the store's writer thread).

    Returns (targets added or changed, targets removed); their history goes with the removed."""
    saved = [store.insert_target(session, spec, AUTO, ts) for spec in todo.add]
    saved += [store.update_target(session, target.pk, spec, ts) for target, spec in todo.change]
    for target in todo.remove:
        store.delete_target(session, target.pk)
    for target in saved:
        log.info("automatic certificate check %r (%s:%d)", target.name, target.spec.host,
                 target.spec.port)
    return saved, list(todo.remove)
