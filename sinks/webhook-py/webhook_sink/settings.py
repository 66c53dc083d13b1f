"""The webhook sink's settings: the `settings` map of its kubesink
configuration, parsed and checked once in `init`.

| key | meaning |
| --- | --- |
| `url` | required: `http://` or `https://` URL every batch is POSTed to |
| `header.NAME` | optional, repeatable: a request header `NAME: value` (e.g. `header.Authorization`) |
| `max_bytes` | most body bytes per request, 1024..=16777216, default 1048576 |

Any other key is an error naming it. Header values are never put in
error messages (they often hold tokens); error messages name the receiver
as `scheme://host[:port]` only, because webhook URLs often carry a token in
their path or query.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import List, Sequence, Tuple

#: Default most bytes of one request body.
DEFAULT_MAX_BYTES = 1 << 20
#: Smallest accepted `max_bytes`.
MIN_MAX_BYTES = 1 << 10
#: Largest accepted `max_bytes`: the host's default request body cap.
MAX_MAX_BYTES = 16 << 20

#: Headers the sink sets itself or the host's HTTP client owns.
RESERVED_HEADERS = frozenset(
    {
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
        "proxy-connection",
        "idempotency-key",
        "x-kubesink-records",
    }
)

_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class SettingsError(ValueError):
    """A setting is missing, unknown or malformed; the message names the key."""


@dataclass(frozen=True)
class Target:
    """Where requests go, split the way `wasi:http` wants it."""

    #: `http` or `https`.
    scheme: str
    #: `host[:port]` (IPv6 hosts in brackets).
    authority: str
    #: Path and query, at least `/`.
    path_with_query: str

    def origin(self) -> str:
        """`scheme://authority`: how error messages name the receiver."""
        return f"{self.scheme}://{self.authority}"


@dataclass(frozen=True)
class Settings:
    """The checked settings."""

    target: Target
    #: Extra request headers, in the order given (sorted by key).
    headers: Tuple[Tuple[str, str], ...]
    max_bytes: int

    @staticmethod
    def parse(pairs: Sequence[Tuple[str, str]]) -> "Settings":
        """Checks the `(key, value)` pairs `init` received."""
        url = None
        headers: List[Tuple[str, str]] = []
        max_bytes = DEFAULT_MAX_BYTES
        seen = set()
        for key, value in pairs:
            if key in seen:
                raise SettingsError(f"webhook sink: setting `{key}` is given twice")
            seen.add(key)
            if key == "url":
                url = value
            elif key == "max_bytes":
                max_bytes = _parse_max_bytes(value)
            elif key.startswith("header."):
                headers.append(_parse_header(key, value))
            else:
                raise SettingsError(
                    f"webhook sink: unknown setting `{key}` (known: url, header.NAME, max_bytes)"
                )
        if url is None or not url.strip():
            raise SettingsError("webhook sink: setting `url` is required")
        headers.sort(key=lambda kv: kv[0].lower())
        return Settings(target=parse_url(url.strip()), headers=tuple(headers), max_bytes=max_bytes)


def _parse_max_bytes(value: str) -> int:
    try:
        n = int(value.strip())
    except ValueError:
        raise SettingsError(f"webhook sink: setting `max_bytes`: `{value}` is not a whole number of bytes") from None
    if not MIN_MAX_BYTES <= n <= MAX_MAX_BYTES:
        raise SettingsError(
            f"webhook sink: setting `max_bytes`: {n} is outside {MIN_MAX_BYTES}..={MAX_MAX_BYTES}"
        )
    return n


def _parse_header(key: str, value: str) -> Tuple[str, str]:
    name = key[len("header.") :]
    if not name or any(c not in _TOKEN_CHARS for c in name):
        raise SettingsError(f"webhook sink: setting `{key}`: `{name}` is not a valid header name")
    if name.lower() in RESERVED_HEADERS:
        raise SettingsError(
            f"webhook sink: setting `{key}`: header `{name}` is set by the sink or the host and cannot be configured"
        )
    if any(c in value for c in "\r\n\0"):
        raise SettingsError(f"webhook sink: setting `{key}`: the value contains a line break or NUL")
    return name, value


def parse_url(url: str) -> Target:
    """Splits an `http(s)://host[:port]/path?query` URL; refuses anything else."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise SettingsError(f"webhook sink: setting `url`: not a valid URL: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise SettingsError(
            f"webhook sink: setting `url`: scheme `{parts.scheme}` is not http or https"
        )
    if parts.username is not None or parts.password is not None:
        raise SettingsError(
            "webhook sink: setting `url`: credentials in the URL are not supported; use `header.Authorization`"
        )
    host = parts.hostname
    if not host:
        raise SettingsError("webhook sink: setting `url`: no host")
    if parts.fragment:
        raise SettingsError("webhook sink: setting `url`: a fragment (#...) is not sent over HTTP; remove it")
    if ":" in host:
        host = f"[{host}]"
    authority = host if port is None else f"{host}:{port}"
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(scheme=scheme, authority=authority, path_with_query=path)
