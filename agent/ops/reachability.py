"""What happened when a service could not be reached, in the words practice IT acts on.

"Connection failed" does not tell a practice's IT person whether to fix DNS, a firewall or the
URL. `what_happened` looks the name up and opens a TCP connection itself (as the failed call
did: through the proxy when one is used) and says which it was:

- the name does not exist (DNS has no such host): a typo in the URL, or no DNS;
- the host refused the connection (nothing listens on that port, or a firewall rejects it);
- no answer in time (a firewall dropping the packets, the host down, or a server that accepts
  but never replies);
- it answered, with an HTTP status (404: nothing at that URL).
"""

from __future__ import annotations

import socket
from typing import Final
from urllib.parse import urlsplit

from agent.errors import exception_chain

# getaddrinfo's "no such name" codes (POSIX EAI_NONAME / EAI_NODATA; Windows' WSAHOST_NOT_FOUND
# and WSANO_DATA), as opposed to "could not ask" (no DNS server reachable).
_NO_SUCH_NAME: Final = frozenset(
    {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME), 11001, 11004}
)


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    try:
        port = parts.port or default
    except ValueError:
        port = default
    return parts.hostname or "", port


def probe(url: str, *, timeout_s: float, proxy: str | None = None) -> str | None:
    """Look up and connect to `url`'s host and port (or the proxy's): the words for what went
    wrong, or None when a TCP connection opens (the trouble is above TCP)."""
    host, port = _host_port(proxy or url)
    who = "the proxy " if proxy else ""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        if e.errno in _NO_SUCH_NAME:
            return f"{who}{host} does not exist (DNS knows no such name)"
        return f"{who}{host} could not be looked up (DNS: {e.strerror})"
    family, kind, proto, _, address = addresses[0]
    try:
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(timeout_s)
            sock.connect(address)
    except ConnectionRefusedError:
        return (
            f"{who}{host}:{port} refused the connection (nothing listens there, or a firewall "
            "rejects it)"
        )
    except TimeoutError:
        return (
            f"{who}{host}:{port} gave no answer within {timeout_s:.0f} s (a firewall dropping "
            "the traffic, or the host is down)"
        )
    except OSError as e:
        return f"{who}{host}:{port} could not be reached ({e.strerror or type(e).__name__})"
    return None


def _timed_out(error: BaseException) -> bool:
    return isinstance(error, TimeoutError) or any(
        word in type(error).__name__ for word in ("Timeout", "SlowRetrieval")
    )


def what_happened(
    url: str, error: BaseException | None, *, timeout_s: float, proxy: str | None = None
) -> str:
    """Why reaching `url` failed with `error`: the probe's words when the name or the TCP
    connection is the trouble, else what the exception chain shows (an HTTP status, a reply
    that never came), else the error's type."""
    words = probe(url, timeout_s=timeout_s, proxy=proxy)
    if words is not None:
        return words
    host, port = _host_port(url)
    for e in exception_chain(error):
        status = getattr(e, "status_code", None)
        if isinstance(status, int):
            found = " (nothing at that URL)" if status == 404 else ""
            return f"{host}:{port} answered HTTP {status}{found}"
        if _timed_out(e):
            return f"{host}:{port} accepted the connection but sent no answer in time"
    kind = type(error).__name__ if error is not None else "unknown error"
    return f"{host}:{port} accepts connections, but the request failed ({kind})"
