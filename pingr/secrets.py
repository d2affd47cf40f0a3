"""Masking of credentials: URL passwords and tokens, secret headers, channel topics, and the
same inside free text (error messages), for every place a secret could be shown or logged.

A read key used to see `user:password@` in target URLs and header values such as
`Authorization: Bearer …` or an `x-api-key` holding pingr's own admin key (read → admin).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

MASK = "****"
#: Parts of a name (header, query parameter, field) that say its value is a secret.
SECRET_WORDS = ("auth", "token", "secret", "key", "pass", "cookie", "session", "signature",
                "credential", "sig", "bearer")
#: Header values that are credentials whatever the header is called.
_SECRET_VALUE = re.compile(r"^\s*(bearer|basic|token|digest|apikey)\s+\S|^\s*pingr_\S", re.I)
_URL_USERINFO = re.compile(r"""(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@?#'"]+@""")
_QUERY_SECRET = re.compile(
    r"(?i)([?&;][^=&\s#]*(?:" + "|".join(SECRET_WORDS) + r""")[^=&\s#]*=)[^&\s#'"]+""")
#: apprise schemes whose path (or host, for the public server) is itself the secret.
_TOPIC_SCHEMES = ("ntfy", "ntfys")


def secret_name(name: str) -> bool:
    """Whether a header, query parameter or field called `name` holds a secret."""
    low = name.lower()
    return any(word in low for word in SECRET_WORDS)


def mask_url(url: str) -> str:
    """The URL with its password (or a lone user name: often a token) and secret query values
    replaced by ****. Anything unparsable is masked whole."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user, sep, _password = userinfo.partition(":")
            netloc = f"{user}:{MASK}@{host}" if sep else f"{MASK}@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, MASK if secret_name(k) else v) for k, v in pairs],
                              safe="*", quote_via=quote)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return MASK


def mask_headers(headers: dict[str, str] | None) -> dict[str, str] | None:
    """Header values that are credentials (by name or by their shape) replaced by ****."""
    if headers is None:
        return None
    return {name: MASK if secret_name(name) or _SECRET_VALUE.search(value or "") else value
            for name, value in headers.items()}


def mask_text(text: str | None) -> str | None:
    """Credentials inside free text (an error message quoting a URL) replaced by ****."""
    if not text:
        return text
    return _QUERY_SECRET.sub(r"\1" + MASK, _URL_USERINFO.sub(r"\1" + MASK + "@", text))


def _short(part: str) -> str:
    return f"{part[0]}...{part[-1]}" if len(part) > 2 else MASK


def mask_topics(url: str) -> str:
    """For channel URLs whose path is the secret (ntfy topics: anyone who knows one reads
    every message), every topic shortened to its first and last character."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in _TOPIC_SCHEMES:
        return url
    parts = urlsplit(url)
    path = "/".join(_short(p) if p else p for p in parts.path.split("/"))
    netloc = parts.netloc
    host = netloc.rsplit("@", 1)[-1]
    if "." not in host and ":" not in host and host not in ("localhost",):
        # ntfy://topic: no server named, the "host" is the topic on the public server.
        netloc = netloc[: len(netloc) - len(host)] + _short(host)
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


def mask_fields(data: dict[str, Any]) -> dict[str, Any]:
    """A target's fields as a lower scope may see them: URL credentials, secret headers and
    any field named like a secret (a heartbeat token) masked."""
    out = dict(data)
    for name, value in data.items():
        if name == "url" and isinstance(value, str):
            out[name] = mask_url(value)
        elif name == "headers" and isinstance(value, dict):
            out[name] = mask_headers(value)
        elif secret_name(name) and isinstance(value, str):
            out[name] = MASK
    return out
