"""DNS probe: ask one DNS server for one record (dnspython, non-blocking, UDP with TCP fallback).

Success is an answer of the asked type (NOERROR with a record, following CNAMEs) that, when
`expect` is given, matches it. dnspython is imported on the first DNS probe, not at start: a box
without DNS targets does not pay for it (~2.4 MiB RSS on x86-64 with httpx already loaded).

Answers are compared as text, normalised per type (see `answer_text`):
  A/AAAA: the address in its canonical form (`fd00::5`, not `fd00:0::5`);
  CNAME/NS/PTR/DNAME: the target name, lower case, no trailing dot;
  MX: `10 mail.example.lan`; an expected value without the preference (`mail.example.lan`)
      matches the exchange alone. SRV likewise: `0 5 5060 sip.example.lan` or the target alone;
  TXT: the record's strings joined without separator (`v=spf1 -all`), case kept;
  others (SOA, CAA, ...): dnspython's presentation text, names without trailing dot.
`expect_mode`: `all` (default): every expected value is among the answers (others may be
there too); `any`: at least one is; `exact`: the answers are exactly the expected values.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from pingr.configbase import TargetBase, located
from pingr.models import Result, Target
from pingr.probes.context import ProbeContext
from pingr.probes.kind import Kind

if TYPE_CHECKING:
    import dns.message
    import dns.rdata

#: Record types a target may ask for (upper case in the config, lower case accepted).
RECORD_TYPES = frozenset({
    "A", "AAAA", "CNAME", "MX", "TXT", "NS", "SOA", "PTR", "SRV", "CAA", "DNAME", "NAPTR",
    "SSHFP", "TLSA", "DS", "DNSKEY", "HTTPS", "SVCB",
})
#: Types whose answer is one domain name.
_NAME_TYPES = frozenset({"CNAME", "NS", "PTR", "DNAME"})
#: Where the system's nameservers are read from when a target names no server.
RESOLV_CONF = "/etc/resolv.conf"
#: Bounds of what a result keeps of the answer (it is stored with every result).
MAX_ANSWERS = 20
MAX_ANSWER_CHARS = 255


def _split_server(value: str) -> tuple[str, int | None]:
    """`127.0.0.1`, `127.0.0.1:5353`, `::1`, `[::1]:5353` -> (address, port or None)."""
    text = value.strip()
    port: str | None = None
    if text.startswith("["):
        address, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid server {value!r}: write an IPv6 server as [::1]:5353")
        port = rest[1:] or None
    elif text.count(":") == 1:
        address, port = text.split(":")
    else:
        address = text
    try:
        address = str(ipaddress.ip_address(address))
    except ValueError:
        raise ValueError(
            f"invalid server {value!r}: give the DNS server's IP address (with an optional "
            "port: 192.168.1.1:5353, [::1]:5353); a server is not itself looked up by name"
        ) from None
    if port is None:
        return address, None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"invalid port in server {value!r}")
    return address, int(port)


def _norm_name(text: str) -> str:
    return text.strip().rstrip(".").lower() if text.strip() != "." else "."


class DnsTarget(TargetBase):
    """Resolve `query` (record `record_type`) against `server`, optionally checking the answer.

    Without a `server`, the nameservers in /etc/resolv.conf are asked, in order: one that
    refuses or is unreachable passes to the next; `timeout` covers them all.
    """

    type: Literal["dns"]
    #: The name to resolve (for PTR an IP address is turned into its in-addr.arpa name).
    query: str = Field(min_length=1, max_length=255)
    #: The DNS server's IP address, optionally with its port (`127.0.0.1:5353`, `[::1]:5353`).
    server: str | None = None
    #: The server's port (only with `server`).
    port: int = Field(53, ge=1, le=65535)
    record_type: str = "A"
    expect: list[str] | None = Field(None, min_length=1, max_length=50)
    expect_mode: Literal["all", "any", "exact"] = "all"
    #: udp: UDP, and TCP again when the answer comes back truncated; tcp: TCP only.
    transport: Literal["udp", "tcp"] = "udp"

    @model_validator(mode="before")
    @classmethod
    def _server_port(cls, data: Any) -> Any:
        """Take a port written in `server` (`127.0.0.1:5353`) into `port`."""
        if not isinstance(data, dict):
            return data
        if data.get("server") is None:
            if data.get("port") not in (None, 53):
                raise located(("port",), "port is the port of `server`: give the server too "
                              "(the nameservers of /etc/resolv.conf are asked on port 53)",
                              data["port"])
            return data
        if not isinstance(data["server"], str):
            return data
        try:
            address, port = _split_server(data["server"])
        except ValueError as exc:
            raise located(("server",), str(exc), data["server"]) from None
        data = {**data, "server": address}
        if port is not None:
            if data.get("port") not in (None, port):
                raise located(("port",), f"server {address} has port {port} but port is "
                              f"{data['port']}: give it once", data["port"])
            data["port"] = port
        return data

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        value = value.strip()
        name = value.rstrip(".")
        if not name or any(c.isspace() for c in value) or len(name) > 253 or any(
                not 0 < len(label) <= 63 for label in name.split(".")):
            raise ValueError(f"invalid name to resolve {value!r}")
        return value

    @field_validator("record_type")
    @classmethod
    def _record_type(cls, value: str) -> str:
        value = value.strip().upper()
        if value not in RECORD_TYPES:
            raise ValueError(f"unsupported record_type {value!r}: use one of "
                             f"{', '.join(sorted(RECORD_TYPES))}")
        return value

    @field_validator("expect")
    @classmethod
    def _expect(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        rtype = info.data.get("record_type")
        if value is None or rtype is None:  # record_type itself was invalid: said already
            return value
        return [_normalise_expected(rtype, v) for v in value]


def _normalise_expected(rtype: str, value: str) -> str:
    """An expected value in the form `answer_text` gives answers (errors name the mistake)."""
    text = " ".join(str(value).split()) if rtype != "TXT" else str(value)
    if rtype in ("A", "AAAA"):
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise ValueError(f"expected {rtype} value {value!r} is not an IP address") from None
        if (address.version == 4) != (rtype == "A"):
            raise ValueError(f"expected value {value!r} is not an "
                             f"{'IPv4' if rtype == 'A' else 'IPv6'} address ({rtype} record)")
        return str(address)
    if rtype in _NAME_TYPES:
        return _norm_name(text)
    if rtype in ("MX", "SRV"):
        *numbers, name = text.split(" ")
        return " ".join([*numbers, _norm_name(name)])
    if rtype == "TXT":
        return text
    return " ".join(t.rstrip(".") if len(t) > 1 else t for t in text.split(" "))


def answer_text(rdata: dns.rdata.Rdata) -> str:
    """One answer record as the text `expect` is compared with (see the module docstring)."""
    rtype = rdata.rdtype.name  # type: ignore[union-attr]
    if rtype in ("A", "AAAA"):
        return str(ipaddress.ip_address(rdata.address))  # type: ignore[attr-defined]
    if rtype in _NAME_TYPES:
        return _norm_name(rdata.target.to_text())  # type: ignore[attr-defined]
    if rtype == "MX":
        return f"{rdata.preference} {_norm_name(rdata.exchange.to_text())}"  # type: ignore
    if rtype == "SRV":
        r: Any = rdata
        return f"{r.priority} {r.weight} {r.port} {_norm_name(r.target.to_text())}"
    if rtype in ("TXT", "SPF"):
        return b"".join(rdata.strings).decode("utf-8", "replace")  # type: ignore
    return _normalise_expected(rtype, rdata.to_text())


def _matches(expected: str, answer: str, rtype: str) -> bool:
    if expected == answer:
        return True
    # MX/SRV: an expected value without the numbers matches the name alone.
    return rtype in ("MX", "SRV") and " " not in expected and answer.split(" ")[-1] == expected


def _listed(values: list[str], limit: int = 5) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f" (+{len(values) - limit} more)" if len(values) > limit else "")


def check_expected(spec: DnsTarget, answers: list[str]) -> str | None:
    """Why the answers do not satisfy `expect`, or None when they do."""
    if not spec.expect:
        return None
    rtype = spec.record_type
    got = _listed(answers)
    found = [e for e in spec.expect if any(_matches(e, a, rtype) for a in answers)]
    if spec.expect_mode == "any":
        return None if found else f"expected one of {_listed(spec.expect)}, got {got}"
    missing = [e for e in spec.expect if e not in found]
    if spec.expect_mode == "all":
        return f"expected {_listed(missing)}, got {got}" if missing else None
    extra = [a for a in answers if not any(_matches(e, a, rtype) for e in spec.expect)]
    if missing or extra:
        return f"expected exactly {_listed(spec.expect)}, got {got}"
    return None


def system_nameservers(path: str | None = None) -> list[str]:
    """The nameservers of /etc/resolv.conf, read again for every probe (DHCP may change them)."""
    import dns.resolver

    try:
        return [str(ns) for ns in dns.resolver.Resolver(filename=path or RESOLV_CONF).nameservers]
    except dns.resolver.NoResolverConfiguration:
        return []


def _where(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


async def _ask(spec: DnsTarget, query: dns.message.Message, address: str,
               timeout: float) -> tuple[dns.message.Message, bool]:
    """One query (UDP then TCP if truncated, or TCP); returns the response and whether TCP."""
    import dns.asyncbackend
    import dns.asyncquery
    import dns.inet

    if spec.transport == "tcp":
        return await dns.asyncquery.tcp(query, address, timeout, spec.port), True
    # A connected UDP socket (dnspython's own is not, on Linux), so that a server that is not
    # running is told at once (ICMP port unreachable: ConnectionRefusedError), not by timeout.
    backend = dns.asyncbackend.get_default_backend()
    sock = await backend.make_socket(dns.inet.af_for_address(address), socket.SOCK_DGRAM, 0,
                                     None, (address, spec.port))
    async with sock:
        return await dns.asyncquery.udp_with_fallback(query, address, timeout, spec.port,
                                                      ignore_unexpected=True, udp_sock=sock)


async def run(target: Target, ctx: ProbeContext) -> Result:
    """Ask the server(s); success is an answer of the asked type that matches `expect`."""
    import dns.exception
    import dns.message
    import dns.reversename

    spec: DnsTarget = target.spec  # type: ignore[assignment]
    ts = ctx.clock_ms()
    name = spec.query
    if spec.record_type == "PTR":
        try:
            name = dns.reversename.from_address(name).to_text()
        except (ValueError, dns.exception.SyntaxError):
            pass  # already a name (1.0.0.10.in-addr.arpa)
    shown = spec.query.rstrip(".")
    try:
        query = dns.message.make_query(name, spec.record_type)
    except dns.exception.DNSException as exc:
        return Result(target.id, ts, False, error=f"invalid name {shown!r}: {exc}")
    if spec.server:
        servers = [spec.server]
    else:
        servers = system_nameservers()
        if not servers:
            return Result(target.id, ts, False,
                          error=f"no server given and no nameserver in {RESOLV_CONF}")
    budget = spec.timeout_ms / 1000
    deadline = time.monotonic() + budget
    errors: list[str] = []
    for address in servers:
        where = _where(address, spec.port)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            errors.append(f"no time left to ask {where}")
            break
        start = time.perf_counter()
        try:
            async with asyncio.timeout(remaining):
                response, used_tcp = await _ask(spec, query, address, remaining)
        except (TimeoutError, dns.exception.Timeout):
            errors.append(f"no answer from {where} within {spec.timeout_ms} ms")
            break  # the whole budget is spent
        except ConnectionRefusedError:
            errors.append(f"nothing answers DNS on {where} (connection refused)")
            continue
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
            errors.append(f"cannot reach {where}: {reason}")
            continue
        except dns.exception.DNSException as exc:
            errors.append(f"bad answer from {where}: {exc}")
            continue
        latency = round((time.perf_counter() - start) * 1000)
        return _judge(target, ts, latency, spec, response, where, used_tcp, shown)
    return Result(target.id, ts, False, error="; ".join(errors))


def _judge(target: Target, ts: int, latency: int, spec: DnsTarget,
           response: dns.message.Message, where: str, used_tcp: bool, shown: str) -> Result:
    """The result of one response: its rcode, the answer of the asked type, `expect`."""
    import dns.exception
    import dns.rcode

    rcode = dns.rcode.to_text(response.rcode())
    metrics: dict[str, Any] = {"server": where, "transport": "tcp" if used_tcp else "udp",
                               "rcode": rcode, "answers": []}
    rtype = spec.record_type

    def fail(error: str) -> Result:
        return Result(target.id, ts, False, latency, None, error, metrics)

    if rcode == "NXDOMAIN":
        return fail(f"NXDOMAIN: {shown} does not exist")
    if rcode == "SERVFAIL":
        return fail(f"SERVFAIL: {where} could not resolve {shown}")
    if rcode == "REFUSED":
        return fail(f"REFUSED: {where} refuses to answer for {shown}")
    if rcode != "NOERROR":
        return fail(f"{rcode} from {where} for {shown}")
    try:
        chain = response.resolve_chaining()
    except dns.exception.DNSException as exc:
        return fail(f"bad answer from {where}: {exc}")
    canonical = _norm_name(chain.canonical_name.to_text())
    if canonical != _norm_name(response.question[0].name.to_text()):
        metrics["cname"] = canonical
    if chain.answer is None or not len(chain.answer):
        alias = f" (an alias of {canonical})" if "cname" in metrics else ""
        return fail(f"no {rtype} record for {shown}{alias}")
    answers = sorted(answer_text(rdata) for rdata in chain.answer)
    metrics["ttl"] = chain.minimum_ttl
    metrics["answers"] = [a[:MAX_ANSWER_CHARS] for a in answers[:MAX_ANSWERS]]
    if len(answers) > MAX_ANSWERS:
        metrics["answer_count"] = len(answers)
    mismatch = check_expected(spec, answers)
    if mismatch:
        return fail(mismatch)
    return Result(target.id, ts, True, latency, None, None, metrics)


KIND = Kind(DnsTarget, run)
