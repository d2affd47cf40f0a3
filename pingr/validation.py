"""Validation errors in the words of whoever wrote the input: their field names, their units.

pydantic reports where a value failed inside its own machinery: discriminator tags
(`icmp`), validator wrappers (`function-after[_timeout_fits(), IcmpTarget]`), and the model's
field names even where the input used a friendlier spelling (`timeout: 5m` is validated as
`timeout_ms: 300000`). `describe` walks the input alongside each error's location, drops what
the user never wrote, names the field as they wrote it and states a limit in their unit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from pingr.timeutil import DURATION, UNITS, format_duration

#: Model field -> (the spelling users may write instead, seconds per unit of the field).
ALIASES: dict[str, tuple[str, float]] = {
    "timeout_ms": ("timeout", 0.001),
    "interval_seconds": ("interval", 1.0),
}

_BOUNDS = {"less_than_equal": ("le", "at most"), "less_than": ("lt", "less than"),
           "greater_than_equal": ("ge", "at least"), "greater_than": ("gt", "more than")}
_MISSING = object()


def _walk(loc: Iterable[Any], data: Any, tags: frozenset[str]) -> tuple[list[Any], Any]:
    """The location without pydantic's own parts, and the mapping holding its last part."""
    parts: list[Any] = []
    node, parent = data, _MISSING
    for part in loc:
        if isinstance(part, str) and (
                part.startswith("function-")
                or (part in tags and not (isinstance(node, dict) and part in node))):
            continue  # a discriminator tag or a validator wrapper: not in the input
        parts.append(part)
        parent = node
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = _MISSING
    return parts, parent


def _unit(value: Any) -> str:
    """The unit a duration was written in (`5m` -> m; a bare number means seconds)."""
    if isinstance(value, str):
        m = DURATION.match(value)
        if m and m.group(2):
            return m.group(2)
    return "s"


def in_unit(seconds: float, unit: str) -> str:
    """`seconds` written in `unit` (120, 'm' -> '2m'), or in the best whole unit when that
    would need more than three decimals."""
    value = seconds / UNITS[unit]
    if abs(value - round(value, 3)) < 1e-9:
        return f"{round(value, 3):g}{unit}"
    return format_duration(seconds)


def alias(err: dict[str, Any], parts: list[Any], parent: Any) -> str | None:
    """Rename a model field the user wrote another way (`timeout_ms` -> `timeout`) at the end
    of `parts`, in place; for a bound, the message with the limit in the user's unit."""
    field = parts[-1] if parts else None
    spelling = ALIASES.get(field) if isinstance(field, str) else None
    if not (spelling and isinstance(parent, dict) and spelling[0] in parent
            and field not in parent):
        return None
    short, scale = spelling
    parts[-1] = short
    if err["type"] not in _BOUNDS:
        return None
    key, words = _BOUNDS[err["type"]]
    written = parent[short]
    limit = (err.get("ctx") or {}).get(key)
    if limit is None:
        return None
    return f"must be {words} {in_unit(float(limit) * scale, _unit(written))} (got {written})"


def user_terms(loc: Iterable[Any], err: dict[str, Any], data: Any,
               tags: Iterable[str] = ()) -> tuple[list[Any], str | None]:
    """`loc` with a renamed last field (tags and all else kept, for callers that locate it
    in a YAML tree themselves), and the reworded message when there is one."""
    loc = list(loc)
    _, parent = _walk(loc, data, frozenset(tags))
    tail = [loc[-1]] if loc else []
    msg = alias(err, tail, parent)
    return loc[:-1] + tail, msg


def _message(err: dict[str, Any], parts: list[Any], parent: Any) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    reworded = alias(err, parts, parent)
    if reworded:
        return reworded
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "json_invalid":
        return "body is not valid JSON"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be an object"
    if kind == "union_tag_invalid":
        parts.append("type")
        expected = str(ctx.get("expected_tags", "")).replace("'", "")
        return f"unknown type {ctx.get('tag')!r}: use one of {expected}"
    if kind == "union_tag_not_found":
        parts.append("type")
        return "required"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    msg = re.sub(r"^(Input|Value|String|List|Dictionary|Tuple|Set|Decimal|Date|Datetime) "
                 r"should ", "must ", msg)
    return msg


def path_text(parts: Iterable[Any]) -> str:
    """`targets[0].timeout` from ['targets', 0, 'timeout']."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def describe(errors: ValidationError | Iterable[dict[str, Any]], data: Any = None, *,
             tags: Iterable[str] = (), skip: int = 0) -> list[str]:
    """One `path: message` line per error (duplicates once), in the input's own terms.

    `data` is the input as the user wrote it (a request body, a YAML mapping); `tags` are the
    discriminator values that may appear in locations; `skip` drops leading location parts
    that are not in `data` (FastAPI's `body`, `query`).
    """
    items = errors.errors() if isinstance(errors, ValidationError) else list(errors)
    tagset = frozenset(tags)
    out: list[str] = []
    for err in items:
        parts, parent = _walk(list(err.get("loc", ()))[skip:], data, tagset)
        msg = _message(err, parts, parent)
        line = f"{path_text(parts)}: {msg}" if parts else msg
        if line not in out:
            out.append(line)
    return out
