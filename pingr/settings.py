"""The core sections of pingr.yaml: auth, storage, Docker, alerts, scheduler, notifications,
heartbeat limits, events, metrics (the parts' own sections live beside them)."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, field_validator

from pingr.collectors.settings import CrashLoopConfig, ThresholdsConfig
from pingr.configbase import Duration, Size, Strict
from pingr.notify.urls import check_url

#: Configured API keys shorter than this are accepted (the Pingr agent's own example is 15
#: characters) but warned about in the log, `pingr check-config` and /api/v1/health.
SHORT_KEY = 16


class AuthConfig(Strict):
    """API keys and rate limits."""

    api_key: str | None = Field(None, min_length=1, description=f"a known admin key; "
                                f"shorter than {SHORT_KEY} characters draws a warning")
    key_file: str | None = None
    rate_limit_per_minute: int = Field(120, ge=1, le=100_000)
    auth_failures_per_minute: int = Field(10, ge=1, le=10_000)
    trusted_proxies: list[str] = Field(default_factory=list)

    @field_validator("api_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or value != value.strip()):
            raise ValueError("must not be blank or start or end with spaces")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"invalid proxy address or network {item!r}") from exc
        return value


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
    #: pingr never writes the disk below this much free space (results wait in memory);
    #: 0 switches the floor off.
    min_free: Size = Field(16 * 1024**2, ge=0)
    #: Started on a full or read-only disk: the database file is tried again this often.
    retry_interval: Duration = Field(30, ge=1, le=3600)

    @field_validator("max_size")
    @classmethod
    def _cap(cls, value: int) -> int:
        if 0 < value < 1024**2:
            raise ValueError("max_size must be at least 1MB (or 0 for no cap)")
        return value


class DockerConfig(Strict):
    """Docker engine access (used by the container collector)."""

    enabled: bool | Literal["auto"] = "auto"
    #: unix:///var/run/docker.sock, tcp://host:2375, or a plain socket path (as the Pingr
    #: agent writes it: /var/run/docker.sock).
    socket: str = "unix:///var/run/docker.sock"
    monitor: Literal["labeled", "all"] = "labeled"
    containers: list[str] = Field(default_factory=list)
    crash_loop: CrashLoopConfig = Field(default_factory=CrashLoopConfig)
    grace: Duration = Field(10.0, ge=0, le=3600)
    resync: Duration = Field(60.0, ge=1, le=86400)

    @field_validator("socket")
    @classmethod
    def _socket(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("/"):
            return "unix://" + value  # the Docker SDK wants a URL
        if not re.match(r"^(unix|tcp|http|https|ssh)://\S+$", value):
            raise ValueError(f"invalid Docker socket {value!r}: give a path such as "
                             "/var/run/docker.sock or a URL such as unix:///var/run/docker.sock "
                             "or tcp://127.0.0.1:2375")
        return value


class FcmConfig(Strict):
    """Firebase Cloud Messaging credentials: pushes to the paired mobile app go through
    apprise's FCM plugin (HTTP v1 API, OAuth2 with a service account)."""

    project: str = Field(min_length=1, max_length=128, description="the Firebase project id")
    keyfile: str = Field(min_length=1, description="the service account's JSON key file")

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9._-]+$", value):
            raise ValueError(f"invalid Firebase project id {value!r}")
        return value


class AlertsConfig(Strict):
    """Alert engine settings (and the Pingr agent's alert settings)."""

    stale_factor: float = Field(3.0, ge=1.5, le=100)
    thresholds: ThresholdsConfig = Field(default_factory=ThresholdsConfig)
    #: The mobile app's FCM registration token; normally set by pairing (POST /api/v1/pair).
    fcm_token: str = Field("", max_length=4096)
    #: The Pingr agent's name for notify_settings.cooldown (least time between two messages
    #: about one target).
    cooldown: Duration | None = Field(None, ge=0, le=7 * 86400)
    fcm: FcmConfig | None = None

    @field_validator("fcm_token")
    @classmethod
    def _token(cls, value: str) -> str:
        value = value.strip()
        if value and not re.match(r"^[A-Za-z0-9_:.\-]+$", value):
            raise ValueError("invalid FCM token: letters, digits and _ : . - only")
        return value


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
        return check_url(value)  # loads apprise: only when channels are configured


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


class MetricsConfig(Strict):
    """The `metrics:` section: GET /metrics in the Prometheus text format."""

    enabled: bool = True
    public: bool = Field(
        False, description="serve /metrics without an API key (only on a trusted network)"
    )


class HttpConfig(Strict):
    """Limits of the HTTP API that keep hostile or careless clients from knocking pingr over."""

    #: Request bodies larger than this are refused with 413 before they are read.
    max_body: Size = Field(64 * 1024, ge=1024, le=16 * 1024**2)
    #: JSON bodies nested deeper than this are refused with 400 before they are parsed.
    max_json_depth: int = Field(32, ge=2, le=1000)
    #: Open connections at most; past it the oldest idle ones are closed, else new ones refused.
    max_connections: int = Field(256, ge=4, le=100_000)
    #: A client must send a whole request head within this, and a body within as long again
    #: (slowloris clients are closed).
    header_timeout: Duration = Field(10.0, ge=0.5, le=600)
