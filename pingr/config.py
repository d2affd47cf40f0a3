"""pingr.yaml: pydantic models, built-in defaults, environment overrides and located errors."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pingr.collectors.settings import CrashLoopConfig, ThresholdsConfig
from pingr.configbase import Duration, Strict
from pingr.metrics import MetricsConfig
from pingr.mqtt import MqttConfig
from pingr.outputs.config import HardwareConfig, located
from pingr.timeutil import parse_duration

DEFAULT_PORT = 9009
DEFAULT_HOST = "0.0.0.0"

# --------------------------------------------------------------------------- targets


class TargetBase(Strict):
    """Fields every probe type shares (the Pingu draft's target model)."""

    name: str = Field(min_length=1, max_length=100)
    interval_seconds: int = Field(30, ge=1, le=86400)
    timeout_ms: int = Field(None, ge=50, le=120_000, description="default: 2000 or the interval")
    enabled: bool = True
    failure_threshold: int = Field(3, ge=1, le=1000)
    recovery_threshold: int = Field(1, ge=1, le=1000)
    tags: list[str] = Field(default_factory=list)
    depends_on: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _durations(cls, data: Any) -> Any:
        """Accept `interval: 30s` / `timeout: 2s` as friendlier spellings in YAML."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for short, long, scale in (("interval", "interval_seconds", 1),
                                   ("timeout", "timeout_ms", 1000)):
            if short in data:
                if long in data:
                    raise ValueError(f"give either {short} or {long}, not both")
                value = parse_duration(data.pop(short))
                data[long] = round(value * scale) if scale != 1 else max(1, round(value))
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("name must not be blank")
        return value

    @model_validator(mode="after")
    def _timeout_fits(self) -> TargetBase:
        if self.timeout_ms is None:
            self.timeout_ms = min(2000, self.interval_seconds * 1000)
        if self.timeout_ms > self.interval_seconds * 1000:
            raise ValueError(
                f"timeout_ms ({self.timeout_ms}) must not exceed the interval "
                f"({self.interval_seconds}s)"
            )
        return self


def _check_host(value: str) -> str:
    value = value.strip()
    if not value or " " in value or "/" in value:
        raise ValueError(f"invalid host {value!r}: give an IP address or a host name")
    return value


class IcmpTarget(TargetBase):
    """Ping a host (ICMP echo)."""

    type: Literal["icmp"]
    host: str

    _host = field_validator("host")(classmethod(lambda cls, v: _check_host(v)))


class TcpTarget(TargetBase):
    """Open a TCP connection to host:port."""

    type: Literal["tcp"]
    host: str
    port: int = Field(ge=1, le=65535)

    _host = field_validator("host")(classmethod(lambda cls, v: _check_host(v)))


class HttpTarget(TargetBase):
    """Fetch a URL; success is a status below 400 unless `expect_status` says otherwise."""

    type: Literal["http"]
    url: str
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    expect_status: list[int] | None = None
    body_contains: str | None = None
    verify_tls: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid url {value!r}: expected http://host[:port]/path or https://…")
        return value.strip()

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, value: list[int] | None) -> list[int] | None:
        for code in value or []:
            if not 100 <= code <= 599:
                raise ValueError(f"invalid HTTP status {code}")
        return value


class HeartbeatTarget(TargetBase):
    """A job that checks in at /ping/{token}; silence for period + grace means down.

    `interval` is how often the deadline is checked. Without a `token` pingr generates one
    and keeps it in the database (see GET /api/v1/heartbeats).
    """

    type: Literal["heartbeat"]
    token: str | None = Field(None, min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    period: Duration = Field(gt=0, le=400 * 86400)
    grace: Duration = Field(60.0, ge=0, le=400 * 86400)
    # One missed deadline is already a fact, not a flaky probe.
    failure_threshold: int = Field(1, ge=1, le=1000)


TargetConfig = Annotated[IcmpTarget | HttpTarget | TcpTarget | HeartbeatTarget,
                         Field(discriminator="type")]
TARGET_TYPES: dict[str, type[TargetBase]] = {"icmp": IcmpTarget, "http": HttpTarget,
                                             "tcp": TcpTarget, "heartbeat": HeartbeatTarget}


def target_host(spec: TargetBase) -> str | None:
    """The network host a target talks to (for display and the default-traffic guard)."""
    if isinstance(spec, HttpTarget):
        return urlsplit(spec.url).hostname
    return getattr(spec, "host", None)


# --------------------------------------------------------------------------- sections


class AuthConfig(Strict):
    """API keys and rate limits."""

    api_key: str | None = Field(None, min_length=16)
    key_file: str | None = None
    rate_limit_per_minute: int = Field(120, ge=1, le=100_000)
    auth_failures_per_minute: int = Field(10, ge=1, le=10_000)
    trusted_proxies: list[str] = Field(default_factory=list)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"invalid proxy address or network {item!r}") from exc
        return value


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}


def parse_size(value: Any) -> int:
    """Bytes for `256MB`, `1.5G`, `512k` or a bare number of bytes (units are binary)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 256MB or 1GB")
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("kmgib")
    unit = text[len(number):]
    try:
        return int(float(number) * _SIZE_UNITS[unit])
    except (KeyError, ValueError):
        raise ValueError(
            f"invalid size {value!r}: use a number with a unit: 64MB, 256MB, 1GB"
        ) from None


#: Bytes, written in config as `256MB`, `1GB` (a bare number means bytes).
Size = Annotated[int, BeforeValidator(parse_size)]


class StorageConfig(Strict):
    """SQLite location, flush cadence, retention, rollups and the size cap."""

    path: str | None = None
    retention: Duration = Field(7 * 86400, gt=0)
    #: Results reach the spool file this often (a crash loses at most this much).
    flush_interval: Duration = Field(1.0, ge=0.05, le=300)
    #: The spool is committed to SQLite this often (SD-card wear; a crash loses nothing more).
    commit_interval: Duration = Field(600.0, ge=1, le=3600)
    #: ...or sooner, when this many results wait in memory.
    batch_size: int = Field(5000, ge=1, le=50_000)
    #: Directory of the spool file. Default: systemd's RUNTIME_DIRECTORY (/run/pingr, RAM:
    #: no card writes, survives a crash or restart of pingr, not a power cut), else the
    #: database's directory.
    spool_dir: str | None = None
    cleanup_interval: Duration = Field(3600, ge=1)
    #: `all` keeps every raw result; `changes` keeps failures, state changes and one sample
    #: per `raw_sample_interval` per target (rollups always count every result).
    raw: Literal["all", "changes"] = "all"
    raw_sample_interval: Duration = Field(300, ge=1, le=86400)
    minute_retention: Duration = Field(48 * 3600, ge=3600)
    hour_retention: Duration = Field(365 * 86400, ge=86400)
    #: Hard cap of the database file: oldest raw results go first, per-minute, then per-hour
    #: aggregates last. 0 switches the cap off.
    max_size: Size = Field(256 * 1024**2, ge=0)

    @field_validator("max_size")
    @classmethod
    def _cap(cls, value: int) -> int:
        if 0 < value < 1024**2:
            raise ValueError("max_size must be at least 1MB (or 0 for no cap)")
        return value


class DockerConfig(Strict):
    """Docker engine access (used by the container collector)."""

    enabled: bool | Literal["auto"] = "auto"
    socket: str = "unix:///var/run/docker.sock"
    monitor: Literal["labeled", "all"] = "labeled"
    containers: list[str] = Field(default_factory=list)
    crash_loop: CrashLoopConfig = Field(default_factory=CrashLoopConfig)
    grace: Duration = Field(10.0, ge=0, le=3600)
    resync: Duration = Field(60.0, ge=1, le=86400)


class AlertsConfig(Strict):
    """Alert engine settings."""

    stale_factor: float = Field(3.0, ge=1.5, le=100)
    thresholds: ThresholdsConfig = Field(default_factory=ThresholdsConfig)


class SchedulerConfig(Strict):
    """Probe loop limits."""

    max_concurrency: int = Field(100, ge=1, le=10_000)
    stagger: Duration = Field(10, ge=0, le=3600)


NOTIFY_ON = ("alert", "recovery", "reminder")


class NotifyChannel(Strict):
    """One apprise URL (ntfy://, tgram://, mailto://, json:// …) and what it is told about."""

    name: str = Field(min_length=1, max_length=64)
    url: str = Field(min_length=4, max_length=2000)
    on: list[Literal["alert", "recovery", "reminder"]] = Field(
        default_factory=lambda: list(NOTIFY_ON))
    targets: list[str] = Field(default_factory=list, description="only these targets (names)")
    tags: list[str] = Field(default_factory=list, description="only targets with one of these tags")

    @field_validator("url")
    @classmethod
    def _apprise_url(cls, value: str) -> str:
        from pingr.notify import check_url  # imports apprise: only when channels are configured

        return check_url(value)


class NotifySettings(Strict):
    """When notifications go out and how failed deliveries are retried."""

    reminder_interval: Duration = Field(1800, ge=0, description="0 = no reminders")
    cooldown: Duration = Field(300, ge=0)
    timeout: Duration = Field(10, gt=0, le=300)
    max_concurrency: int = Field(4, ge=1, le=100)
    retry_base: Duration = Field(30, gt=0, le=86400)
    retry_max: Duration = Field(3600, gt=0, le=7 * 86400)
    max_attempts: int = Field(8, ge=1, le=100)
    queue_size: int = Field(200, ge=1, le=100_000)
    log_size: int = Field(1000, ge=10, le=1_000_000)


class PushConfig(Strict):
    """Limits of the public heartbeat endpoints (/ping/{token}, /api/v1/push/{token})."""

    per_token_per_minute: int = Field(60, ge=1, le=100_000)
    per_ip_per_minute: int = Field(300, ge=1, le=100_000)
    max_body: int = Field(10_000, ge=0, le=10_000_000, description="bytes")


class EventsConfig(Strict):
    """The Server-Sent Events stream (GET /api/v1/events)."""

    queue_size: int = Field(256, ge=1, le=100_000)
    keepalive: Duration = Field(15, ge=0.05, le=3600)
    max_clients: int = Field(32, ge=1, le=10_000)


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
    targets: list[TargetConfig] = Field(default_factory=list)
    notify: list[NotifyChannel] = Field(default_factory=list)
    notify_settings: NotifySettings = Field(default_factory=NotifySettings)
    push: PushConfig = Field(default_factory=PushConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)

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
                if isinstance(part, str) and part in TARGET_TYPES:
                    continue
                return found
            found = nxt
        elif isinstance(found, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(found.value):
                return found
            found = found.value[part]
        else:
            if isinstance(part, str) and part in TARGET_TYPES:
                continue
            return found
    return found


def _loc_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in TARGET_TYPES or str(part).startswith("function-"):
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
            msg = f"unknown target type: use one of {', '.join(TARGET_TYPES)}"
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


def state_directory(env: dict[str, str] | None = None) -> Path:
    """systemd's STATE_DIRECTORY, else /var/lib/pingr when writable, else a per-user directory."""
    env = dict(os.environ if env is None else env)
    if env.get("STATE_DIRECTORY"):
        # systemd may pass several colon-separated directories; the first is ours.
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    system = Path("/var/lib/pingr")
    try:
        system.mkdir(parents=True, exist_ok=True)
        if os.access(system, os.W_OK):
            return system
    except OSError:
        pass
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "pingr"


def database_path(config: Config, env: dict[str, str] | None = None) -> Path:
    """Where the SQLite file lives."""
    if config.storage.path:
        return Path(config.storage.path).expanduser()
    return state_directory(env) / "pingr.db"


def spool_path(config: Config, db: Path, env: dict[str, str] | None = None) -> Path:
    """Where the results spool lives: `storage.spool_dir`, systemd's RUNTIME_DIRECTORY (a
    tmpfs that outlives restarts of the service with RuntimeDirectoryPreserve=yes), else
    beside the database."""
    env = dict(os.environ if env is None else env)
    name = db.name + "-spool"
    if config.storage.spool_dir:
        return Path(config.storage.spool_dir).expanduser() / name
    if env.get("RUNTIME_DIRECTORY"):
        return Path(env["RUNTIME_DIRECTORY"].split(":")[0]) / name
    return db.with_name(name)
