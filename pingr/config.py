"""pingr.yaml: the root model, built-in defaults, environment overrides and located errors."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from pingr.configbase import FIELD_SPELLINGS, Strict, TargetBase, located
from pingr.fleet.config import FleetConfig
from pingr.mqtt.config import MqttConfig
from pingr.outputs.config import HardwareConfig
from pingr.outputs.kinds import OUTPUT_KINDS
from pingr.probes.http import HttpTarget
from pingr.probes.icmp import IcmpTarget
from pingr.probes.registry import KINDS, TargetSpec
from pingr.settings import (
    SHORT_KEY,
    AlertsConfig,
    AuthConfig,
    DockerConfig,
    EventsConfig,
    HttpConfig,
    MetricsConfig,
    NotifyChannel,
    NotifySettings,
    PushConfig,
    SchedulerConfig,
    StorageConfig,
)
from pingr.validation import user_terms
from pingr.web.config import WebConfig

#: Discriminator tags pydantic puts into error locations; they are not YAML keys.
_TAGS = frozenset(KINDS) | frozenset(OUTPUT_KINDS)

DEFAULT_PORT = 9009
DEFAULT_HOST = "0.0.0.0"


class CheckSpec(HttpTarget):
    """A Pingr agent health check (`checks:`): an HTTP target written without `type`."""

    type: Literal["http"] = "http"


class Config(Strict):
    """The whole of pingr.yaml."""

    host: str = DEFAULT_HOST
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="0 picks a free port")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    auth: AuthConfig = Field(default_factory=AuthConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    docker: DockerConfig = Field(default_factory=DockerConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    targets: list[TargetSpec] = Field(default_factory=list)
    #: The Pingr agent's HTTP checks; they become http targets beside `targets:`.
    checks: list[CheckSpec] = Field(default_factory=list)
    notify: list[NotifyChannel] = Field(default_factory=list)
    notify_settings: NotifySettings = Field(default_factory=NotifySettings)
    push: PushConfig = Field(default_factory=PushConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    web: WebConfig = Field(default_factory=WebConfig)

    @model_validator(mode="after")
    def _target_graph(self) -> Config:
        problems = target_problems([(t.name, t.depends_on) for t in self.targets])
        if problems:
            raise located_all(problems)
        return self

    @field_validator("notify")
    @classmethod
    def _unique_channels(cls, channels: list[NotifyChannel]) -> list[NotifyChannel]:
        names = [c.name for c in channels]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate channel name {dupes[0]!r}")
        return channels

    @model_validator(mode="after")
    def _agent_spellings(self) -> Config:
        """The Pingr agent's spellings: `checks:` join the targets (names unique across
        both), `alerts.cooldown` is notify_settings.cooldown."""
        names = {t.name for t in self.targets}
        for i, check in enumerate(self.checks):
            if check.name in names:
                raise located(("checks", i, "name"), f"duplicate target name {check.name!r}")
            names.add(check.name)
        if self.checks:
            # In place: assigning would validate the whole model again.
            self.targets.extend(self.checks)
            try:
                check_dependencies({t.name: t.depends_on for t in self.targets})
            except ValueError as exc:
                raise located(("checks",), str(exc)) from None
        cooldown = self.alerts.cooldown
        if cooldown is not None:
            if ("cooldown" in self.notify_settings.model_fields_set
                    and self.notify_settings.cooldown != cooldown):
                raise located(("alerts", "cooldown"), "give either alerts.cooldown or "
                              "notify_settings.cooldown, not both")
            self.notify_settings.cooldown = cooldown
        return self

    def warnings(self) -> list[str]:
        """Settings that work but should change, in the user's words (logged at start, shown
        by `pingr check-config` and /api/v1/health)."""
        out = []
        key = self.auth.api_key
        if key is not None and len(key) < SHORT_KEY:
            # No length: /api/v1/health shows this without a key, and the exact length
            # would help whoever is guessing.
            out.append(f"auth.api_key is shorter than {SHORT_KEY} characters: a short key is "
                       f"quickly guessed; use {SHORT_KEY} or more (`pingr keys create NAME` "
                       "makes a random one)")
        if self.alerts.fcm_token and self.alerts.fcm is None:
            out.append("alerts.fcm_token is set but alerts.fcm (project, keyfile) is not: the "
                       "mobile app gets no push notifications")
        return out

    @model_validator(mode="after")
    def _hardware_selectors(self) -> Config:
        # Only against configured targets: with none, targets come from the API at run time.
        names = {t.name for t in self.targets}
        for loc, name in self.hardware.selector_targets() if names else ():
            if name not in names:
                raise located(("hardware", *loc), f"output selector names unknown target {name!r}")
        return self

    @model_validator(mode="after")
    def _status_page_targets(self) -> Config:
        # As for selectors: with no configured targets they come from the API at run time.
        names = {t.name for t in self.targets}
        for loc, name in self.web.status_page.component_targets() if names else ():
            if name not in names:
                raise located(("web", "status_page", *loc),
                              f"status page component names unknown target {name!r}")
        return self

    def effective_targets(self) -> list[TargetBase]:
        """Configured targets, or the loopback-only built-in defaults when there are none."""
        return list(self.targets) or default_targets(self.port)


def config_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every setting's dotted path (sections recursed), for documentation checks."""
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append(path)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += config_paths(ann, path + ".")
    return out


def check_dependencies(graph: dict[str, str | None], start: str | None = None) -> None:
    """Reject `depends_on` names that do not exist and dependency cycles (from `start` only,
    when given)."""
    for name, parent in graph.items():
        if start is not None and name != start:
            continue
        if parent is None:
            continue
        if parent not in graph:
            raise ValueError(f"target {name!r} depends_on unknown target {parent!r}")
        seen = [name]
        node: str | None = parent
        while node is not None:
            if node in seen:
                raise ValueError("depends_on cycle: " + " -> ".join([*seen, node]))
            seen.append(node)
            node = graph.get(node)


def target_problems(targets: list[tuple[Any, Any]]) -> list[tuple[tuple[Any, ...], str]]:
    """(location, message) of every duplicate name, unknown `depends_on` and dependency cycle
    among (name, depends_on) pairs, all at once. Works on raw YAML values too, so these are
    reported together with the other errors, not only once those are fixed."""
    out: list[tuple[tuple[Any, ...], str]] = []
    first: dict[str, int] = {}
    for i, (name, _) in enumerate(targets):
        if not isinstance(name, str) or not name.strip():
            continue
        name = name.strip()
        if name in first:
            out.append((("targets", i, "name"), f"duplicate target name {name!r} "
                                               f"(targets[{first[name]}] has it too)"))
        else:
            first[name] = i
    graph: dict[str, str | None] = {}
    for name, i in first.items():
        parent = targets[i][1]
        graph[name] = parent.strip() if isinstance(parent, str) and parent.strip() else None
    for i, (name, parent) in enumerate(targets):
        if isinstance(parent, str) and parent.strip() and parent.strip() not in first:
            out.append((("targets", i, "depends_on"),
                        f"target {str(name).strip()!r} depends_on unknown target "
                        f"{parent.strip()!r}"))
    known = {n: (p if p in graph else None) for n, p in graph.items()}
    reported: set[str] = set()
    for name in known:
        if name in reported:
            continue
        try:
            check_dependencies({k: v for k, v in known.items()}, start=name)
        except ValueError as exc:
            cycle = str(exc).split(": ", 1)[1].split(" -> ")
            reported.update(cycle)
            out.append((("targets", first[name], "depends_on"), str(exc)))
    return out


def located_all(problems: list[tuple[tuple[Any, ...], str]]) -> ValidationError:
    """One validation error holding every (location, message), for file:line:col output."""
    return ValidationError.from_exception_data("pingr", [InitErrorDetails(
        type=PydanticCustomError("pingr", message), loc=loc, input=None)
        for loc, message in problems])


def default_targets(port: int) -> list[TargetBase]:
    """What a newcomer sees with no config: loopback ICMP and pingr's own health endpoint.

    Never a non-loopback address: development and CI machines must not send traffic elsewhere.
    """
    return [
        IcmpTarget(type="icmp", name="localhost", host="127.0.0.1", tags=["default"]),
        HttpTarget(
            type="http",
            name="pingr-api",
            url=f"http://127.0.0.1:{port}/api/v1/health",
            tags=["default"],
        ),
    ]


# --------------------------------------------------------------------------- loading


class ConfigError(Exception):
    """A config file that cannot be used; `errors` holds one located message per problem."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


def _node_at(node: yaml.Node | None, loc: Iterable[Any]) -> yaml.Node | None:
    """Walk a composed YAML node tree along a pydantic error location, as far as it goes."""
    found = node
    loc = list(loc)
    for i, part in enumerate(loc):
        if isinstance(found, yaml.MappingNode):
            if i == len(loc) - 1:  # point at the setting's key, where a reader looks first
                key = next((k for k, _ in found.value if k.value == part), None)
                if key is not None:
                    return key
            nxt = next((v for k, v in found.value if k.value == part), None)
            if nxt is None:
                key = next((k for k, _ in found.value if k.value == part), None)
                if key is not None:
                    return key
                # A discriminator tag (e.g. 'http') is not a YAML key: skip it.
                if isinstance(part, str) and part in _TAGS:
                    continue
                return found
            found = nxt
        elif isinstance(found, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(found.value):
                return found
            found = found.value[part]
        else:
            if isinstance(part, str) and part in _TAGS:
                continue
            return found
    return found


def _loc_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _TAGS or str(part).startswith("function-"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def format_validation_error(exc: ValidationError, source: str, root: yaml.Node | None,
                            data: Any = None) -> list[str]:
    """One `file:line:col: path: message` line per pydantic error."""
    lines: list[tuple[int, int, str]] = []
    for err in exc.errors():
        # `timeout: 5m` is validated as timeout_ms: name it as written, limit in its unit.
        loc, reworded = user_terms(err["loc"], err, data, _TAGS)
        if err["type"] == "union_tag_invalid":
            loc.append("type")
        if loc and loc[-1] in FIELD_SPELLINGS:
            # Name the setting as the file spells it (`interval`, not `interval_seconds`).
            parent = _node_at(root, loc[:-1])
            if isinstance(parent, yaml.MappingNode) and any(
                    k.value == FIELD_SPELLINGS[loc[-1]] for k, _ in parent.value):
                loc[-1] = FIELD_SPELLINGS[loc[-1]]
        node = _node_at(root, loc)
        where, line, col = source, 0, 0
        if node is not None:
            line, col = node.start_mark.line + 1, node.start_mark.column + 1
            where = f"{source}:{line}:{col}"
        msg = reworded or err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        elif err["type"] == "union_tag_invalid":
            what, kinds = (("output", OUTPUT_KINDS) if loc[:2] == ["hardware", "outputs"]
                           else ("target", KINDS))
            msg = f"unknown {what} type: use one of {', '.join(kinds)}"
        lines.append((line, col, f"{where}: {_loc_path(loc)}: {msg}"))
    return [text for _, _, text in sorted(lines, key=lambda x: (x[0], x[1]))]


def duplicate_keys(node: yaml.Node | None, source: str, path: str = "") -> list[str]:
    """A located error for every key given twice in one mapping (YAML loaders keep the last
    silently: a second `targets:` block dropped the first)."""
    out: list[str] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, yaml.Node] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            where = f"{path}.{name}" if path else str(name)
            if name is not None and name in seen:
                first = seen[name].start_mark.line + 1
                out.append(f"{source}:{key.start_mark.line + 1}:{key.start_mark.column + 1}: "
                           f"{where}: duplicate key {name!r} (also on line {first}; only one "
                           "is used)")
            elif name is not None:
                seen[name] = key
            out += duplicate_keys(value, source, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out += duplicate_keys(item, source, f"{path}[{i}]")
    return out


def _raw_target_problems(data: dict[str, Any], source: str, root: yaml.Node | None
                         ) -> list[str]:
    """Duplicate names and unknown or cyclic `depends_on` from the raw YAML, so they come with
    the other errors (the model checks them only once every target is valid)."""
    raw = data.get("targets")
    if not isinstance(raw, list):
        return []
    pairs = [(t.get("name"), t.get("depends_on")) if isinstance(t, dict) else (None, None)
             for t in raw]
    problems = target_problems(pairs)
    if not problems:
        return []
    return format_validation_error(located_all(problems), source, root)


#: LibYAML's parser where PyYAML was built with it (every wheel is): the pure-Python one took
#: 0.3 s of start-up for 100 targets, parsing twice.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _compose(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """One parse: the node tree (its marks locate every error) and the data built from it."""
    loader = _LOADER(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError([f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}"]) from None
    finally:
        loader.dispose()
    return root, data


def parse_config(text: str, source: str = "pingr.yaml") -> Config:
    """Parse and validate YAML text; raise ConfigError with every located message at once."""
    root, data = _compose(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}:1:1: (top level): expected a mapping of settings"])
    errors = duplicate_keys(root, source)
    # The node tree (~30 small objects per target: nodes, marks, keys) goes before the models
    # are made, and the parsed data after (see _repack_targets); a config that fails is
    # parsed again to locate its errors.
    del root
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        root = _compose(text, source)[0]
        found = format_validation_error(exc, source, root, data)
        found += [e for e in _raw_target_problems(data, source, root) if e not in found]
        raise ConfigError(_sorted(errors + found)) from None
    if errors:
        raise ConfigError(errors)
    del data
    _repack_targets(config)
    return config


def _repack_targets(config: Config) -> None:
    """Make the targets' specs again, from their JSON, once everything the parse made is gone.

    A spec's strings (name, host, url) are the parser's: made among the node tree's nodes,
    marks and keys, which all go once the config is built. Each string then held a mostly
    empty block of memory for as long as pingr runs (measured with 1,000 targets: ~1.1 KiB
    of RSS per target). Made again after the rest is let go, the specs fill those holes.
    The JSON is what the store keeps (and reads back) for every target: equal specs."""
    checks = {id(c) for c in config.checks}
    dumped = [(type(t), t.model_dump_json(), id(t) in checks) for t in config.targets]
    config.targets.clear()
    config.checks.clear()
    targets = [kind.model_validate_json(data) for kind, data, _ in dumped]
    config.targets.extend(targets)
    config.checks.extend(t for t, (_, _, check) in zip(targets, dumped, strict=True) if check)


def _sorted(errors: list[str]) -> list[str]:
    def key(line: str) -> tuple[int, int]:
        parts = line.split(":")
        try:
            return int(parts[1]), int(parts[2])
        except (IndexError, ValueError):
            return 0, 0
    return sorted(errors, key=key)


def load_config(path: str | os.PathLike[str] | None = None,
                env: dict[str, str] | None = None) -> Config:
    """Load the config file (or the built-in defaults) and apply PINGR_* environment overrides.

    The file is `path`, else `$PINGR_CONFIG`; with neither, the built-in defaults apply.
    """
    env = dict(os.environ if env is None else env)
    path = path or env.get("PINGR_CONFIG") or None
    if path is not None:
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"{file}: cannot read config: {exc.strerror or exc}"]) from None
        config = parse_config(text, str(file))
    else:
        config = Config()
    errors: list[str] = []
    overrides = {
        "PINGR_PORT": ("port", parse_port),
        "PINGR_HOST": ("host", str),
    }
    for var, (field, kind) in overrides.items():
        if var in env:
            try:
                setattr(config, field, kind(env[var]))
            except (ValueError, ValidationError) as exc:
                errors.append(f"${var}: invalid value {env[var]!r}: {_short(exc)}")
    if "PINGR_DB" in env:
        config.storage.path = env["PINGR_DB"]
    if "PINGR_API_KEY" in env:
        try:
            config.auth.api_key = env["PINGR_API_KEY"]
        except ValidationError as exc:
            errors.append(f"$PINGR_API_KEY: {_short(exc)}")
    if errors:
        raise ConfigError(errors)
    return config


def parse_port(text: str) -> int:
    """A TCP port number from text (environment, command line), with an error in plain words."""
    try:
        port = int(str(text).strip())
    except ValueError:
        raise ValueError("expected a port number from 0 to 65535") from None
    if not 0 <= port <= 65535:
        raise ValueError("expected a port number from 0 to 65535")
    return port


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(e["msg"] for e in exc.errors())
    return str(exc)
