"""The `pingr` command: run, check-config, init, keys."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from pingr import __version__
from pingr.config import Config, ConfigError, load_config, parse_config, parse_port
from pingr.netinfo import default_gateways, dns_servers
from pingr.paths import database_path


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request at INFO; one line per probe would wear out an SD card.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _load(path: str | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        raise SystemExit(1) from None


def cmd_run(args: argparse.Namespace) -> int:
    # `pingr run` through the console command or `python -m pingr` has already kept unused
    # modules out (pingr.launch.skip_unused_imports), before anything imported httpx.
    # Imported here, not at the top: `pingr check-config`, `init` and `--version` must not
    # pay for FastAPI, SQLAlchemy and the parts (seconds and tens of MB on a Pi Zero).
    from pingr.app import App
    from pingr.instance import AlreadyRunning
    from pingr.probes.icmp import IcmpUnavailable
    from pingr.server import Server

    config = _load(args.config)
    if args.host is not None:
        config.host = args.host
    if args.port is not None:
        config.port = args.port
    _setup_logging(config.log_level)
    if not (args.config or os.environ.get("PINGR_CONFIG")):
        logging.getLogger("pingr").info(
            "no config file given: built-in defaults (loopback targets only); "
            "`pingr init pingr.yaml` writes a starter config")
    def reload() -> Config:
        fresh = load_config(args.config)
        fresh.host, fresh.port = config.host, config.port  # the socket stays as it is
        return fresh

    has_file = bool(args.config or os.environ.get("PINGR_CONFIG"))
    try:
        asyncio.run(Server(App(config), reload if has_file else None).run())
    except IcmpUnavailable as exc:
        print(f"pingr: {exc}", file=sys.stderr)
        return 2
    except AlreadyRunning as exc:
        print(f"pingr: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"pingr: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
        config = parse_config(text, str(path))
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        print(f"{len(exc.errors)} error(s) in {path}", file=sys.stderr)
        return 1
    n = len(config.targets)
    print(f"{path}: OK ({n} target{'s' if n != 1 else ''}"
          f"{', built-in defaults' if n == 0 else ''})")
    for warning in config.warnings():
        print(f"{path}: WARNING: {warning}", file=sys.stderr)
    return 0


STARTER = """\
# pingr.yaml: written by `pingr init`. Every setting is described in pingr.example.yaml.
# Check it with `pingr check-config {path}`, then run `pingr run --config {path}`.

port: 9009
host: 0.0.0.0

storage:
  retention: 7d          # raw results older than this are deleted

alerts:
  stale_factor: 3        # no results for 3 x the shortest interval = the monitor is stale

targets:
{targets}
  # More examples:
  # - name: NAS web UI
  #   type: http
  #   url: http://nas.local:5000/
  #   interval: 60s
  #   depends_on: {parent}
  # - name: SSH on the server
  #   type: tcp
  #   host: 192.168.1.10
  #   port: 22
"""


def starter_config(path: str, gateways: list[str], dns: list[str]) -> str:
    """The commented starter config with the machine's gateway and DNS servers as targets."""
    items = []
    parent = None
    for i, gw in enumerate(gateways):
        name = "gateway" if i == 0 else f"gateway {i + 1}"
        parent = parent or name
        items.append(f"  - name: {name}\n    type: icmp\n    host: {gw}\n    interval: 30s\n"
                     f"    failure_threshold: 3\n    tags: [network]\n")
    for i, server in enumerate(dns):
        depends = (f"    depends_on: {parent}   # router down = one alert, not many\n"
                   if parent else "")
        items.append(f"  - name: dns {i + 1}\n    type: tcp\n    host: {server}\n    port: 53\n"
                     f"    interval: 60s\n    tags: [network]\n{depends}")
    if not items:
        items.append("  # No default gateway or DNS server was found; loopback as a start:\n"
                     "  - name: localhost\n    type: icmp\n    host: 127.0.0.1\n")
    return STARTER.format(path=path, targets="".join(items), parent=parent or "gateway")


def cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if path.exists() and not args.force:
        print(f"{path} exists; use --force to overwrite it", file=sys.stderr)
        return 1
    text = starter_config(str(path), default_gateways(), dns_servers())
    parse_config(text, str(path))  # never write a config we would refuse to load
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from sqlmodel import select

    from pingr.keys import create_key, refusal
    from pingr.storage.tables import ApiKeyRow
    from pingr.store import Store
    from pingr.timeutil import from_ms, rfc3339

    config = _load(args.config)
    store = Store(database_path(config))
    store.open(spool=False)  # the service may be running: its spool is not ours
    try:
        with store.session() as s:
            if args.action == "create":
                try:
                    row, plaintext = create_key(s, args.name, args.scope)
                except (ValueError, FileExistsError) as exc:
                    print(f"pingr: {exc}", file=sys.stderr)
                    return 1
                s.commit()
                print(plaintext)
                print(f"created {args.scope} key {args.name!r}; this is the only time it is shown",
                      file=sys.stderr)
                return 0
            if args.action == "list":
                rows = s.exec(select(ApiKeyRow).order_by(ApiKeyRow.id)).all()
                print(f"{'ID':>4}  {'NAME':20} {'SCOPE':8} {'ENABLED':8} {'USES':>6}  LAST USED")
                for r in rows:
                    last = rfc3339(from_ms(r.last_used_at)) if r.last_used_at else "never"
                    print(f"{r.id:>4}  {r.name:20} {r.scope:8} {str(r.enabled).lower():8} "
                          f"{r.usage_count:>6}  {last}")
                return 0
            row = s.exec(select(ApiKeyRow).where(ApiKeyRow.name == args.name)).first()
            if row is None:
                print(f"pingr: no API key named {args.name!r}", file=sys.stderr)
                return 1
            refused = refusal(s, row, args.action)
            if refused:
                print(f"pingr: {refused}", file=sys.stderr)
                return 1
            if args.action == "delete":
                s.delete(row)
            else:
                row.enabled = args.action == "enable"
                s.add(row)
            s.commit()
            print(f"{args.action}d key {args.name!r}")
            return 0
    finally:
        store.close()


def cmd_gpio_test(args: argparse.Namespace) -> int:
    from pingr.outputs.cli import gpio_test
    from pingr.timeutil import parse_duration

    config = _load(args.config)
    _setup_logging(config.log_level)
    try:
        duration = parse_duration(args.duration) if args.duration else None
    except ValueError as exc:
        print(f"pingr: --duration: {exc}", file=sys.stderr)
        return 1
    return asyncio.run(gpio_test(config.hardware, args.name, duration, mock=args.mock))


def _port_arg(text: str) -> int:
    try:
        return parse_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pingr", description="Monitoring appliance: "
                                     "probes, alerts, and the relay/siren/LED that shows them.")
    parser.add_argument("--version", action="version", version=f"pingr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the service (built-in defaults without --config)")
    run.add_argument("--config", "-c", help="config file (default: $PINGR_CONFIG, else built-in)")
    run.add_argument("--host", help="address to listen on (default: host in the config, "
                     "$PINGR_HOST, else 0.0.0.0)")
    run.add_argument("--port", type=_port_arg, help="port to listen on (default: port in the "
                     "config, $PINGR_PORT, else 9009)")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file; exit 0 if valid, 1 if not")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)

    init = sub.add_parser("init", help="write a starter config with this machine's gateway and DNS")
    init.add_argument("file", nargs="?", default="pingr.yaml")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(func=cmd_init)

    keys = sub.add_parser("keys", help="manage API keys")
    keys.add_argument("--config", "-c", help="config file (to find the database)")
    ksub = keys.add_subparsers(dest="action", required=True)
    create = ksub.add_parser("create", help="create a key and print it once")
    create.add_argument("name")
    create.add_argument("--scope", choices=["read", "operate", "admin"], default="read")
    ksub.add_parser("list", help="list keys (never the keys themselves)")
    for action in ("disable", "enable", "delete"):
        p = ksub.add_parser(action, help=f"{action} a key by name")
        p.add_argument("name")
    keys.set_defaults(func=cmd_keys)

    gpio = sub.add_parser("gpio", help="GPIO outputs (hardware: in the config)")
    gsub = gpio.add_subparsers(dest="action", required=True)
    gtest = gsub.add_parser("test", help="exercise every output (or NAME) in turn")
    gtest.add_argument("name", nargs="?", help="only this output")
    gtest.add_argument("--config", "-c", help="config file (default: $PINGR_CONFIG)")
    gtest.add_argument("--duration", help="how long each output stays on, e.g. 3s "
                       "(default: hardware.lamp_test.duration)")
    gtest.add_argument("--mock", action="store_true", help="simulated pins (gpiozero's "
                       "MockFactory): check a config off the Pi; nothing physical switches")
    gtest.set_defaults(func=cmd_gpio_test)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pingr` console command."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
