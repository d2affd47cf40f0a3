"""pingr.yaml: the root model, built-in defaults, environment overrides and located errors."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from pingr.configbase import Strict, TargetBase, located
from pingr.mqtt.config import MqttConfig
from pingr.outputs.config import OUTPUT_KINDS, HardwareConfig
from pingr.probes.http import HttpTarget
from pingr.probes.icmp import IcmpTarget
from pingr.probes.registry import KINDS, TargetSpec
from pingr.settings import (
    AlertsConfig,
    AuthConfig,
    DockerConfig,
    EventsConfig,
    MetricsConfig,
    NotifyChannel,
    NotifySettings,
    PushConfig,
    SchedulerConfig,
    StorageConfig,
)
from pingr.web.config import WebConfig

#: Discriminator tags pydantic puts into error locations; they are not YAML keys.
_TAGS = frozenset(KINDS) | frozenset(OUTPUT_KINDS)

DEFAULT_PORT = 9009
DEFAULT_HOST = "0.0.0.0"


class Config(Strict):
    """The whole of pingr.yaml."""

    host: str = DEFAULT_HOST
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="0 picks a free port")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    auth: AuthConfig = Field(default_factory=AuthConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    docker: DockerConfig = Field(default_factory=DockerConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    targets: list[TargetSpec] = Field(default_factory=list)
    notify: list[NotifyChannel] = Field(default_factory=list)
    notify_settings: NotifySettings = Field(default_factory=NotifySettings)
    push: PushConfig = Field(default_factory=PushConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    web: WebConfig = Field(default_factory=WebConfig)

    @field_validator("targets")
    @classmethod
    def _unique_names(cls, targets: list[TargetBase]) -> list[TargetBase]:
        seen: set[str] = set()
        for target in targets:
            if target.name in seen:
                raise ValueError(f"duplicate target name {target.name!r}")
            seen.add(target.name)
        check_dependencies({t.name: t.depends_on for t in targets})
        return targets

    @field_validator("notify")
    @classmethod
    def _unique_channels(cls, channels: list[NotifyChannel]) -> list[NotifyChannel]:
        names = [c.name for c in channels]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate channel name {dupes[0]!r}")
        return channels

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


def check_dependencies(graph: dict[str, str | None]) -> None:
    """Reject `depends_on` names that do not exist and dependency cycles."""
    for name, parent in graph.items():
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


def format_validation_error(exc: ValidationError, source: str, root: yaml.Node | None) -> list[str]:
    """One `file:line:col: path: message` line per pydantic error."""
    lines: list[tuple[int, int, str]] = []
    for err in exc.errors():
        loc = list(err["loc"])
        if err["type"] == "union_tag_invalid":
            loc.append("type")
        node = _node_at(root, loc)
        where, line, col = source, 0, 0
        if node is not None:
            line, col = node.start_mark.line + 1, node.start_mark.column + 1
            where = f"{source}:{line}:{col}"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        elif err["type"] == "union_tag_invalid":
            what, kinds = (("output", OUTPUT_KINDS) if loc[:2] == ["hardware", "outputs"]
                           else ("target", KINDS))
            msg = f"unknown {what} type: use one of {', '.join(kinds)}"
        lines.append((line, col, f"{where}: {_loc_path(loc)}: {msg}"))
    return [text for _, _, text in sorted(lines, key=lambda x: (x[0], x[1]))]


def parse_config(text: str, source: str = "pingr.yaml") -> Config:
    """Parse and validate YAML text; raise ConfigError with located messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError([f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}:1:1: (top level): expected a mapping of settings"])
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, root)) from None


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
        "PINGR_PORT": ("port", int),
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


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(e["msg"] for e in exc.errors())
    return str(exc)
