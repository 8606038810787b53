"""Store URLs: how they are shown without their password, and what a SQLite or Cassandra URL names.

Kept apart from the stores so that the factory, the CLI and the Cassandra store all read URLs the
same way without importing one another (and without loading the Cassandra driver to print one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_PORT = 9042
DEFAULT_KEYSPACE = "embedding_studio"
_HOST = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<name>[^:\[\]]+))(?::(?P<port>\d+))?")
_KEYSPACE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")


def path_from_url(url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` (the SQLAlchemy convention,
    which is also what ``Settings.resolved_store_url`` writes)."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or not parts.path.startswith("/") or parts.path == "/":
        raise ValueError(f"not a SQLite store URL: {url!r} (expected sqlite:///path/to/file.db)")
    return Path(unquote(parts.path[1:]))


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs and CLI output."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


@dataclass(frozen=True)
class CassandraUrl:
    hosts: tuple[str, ...]
    port: int
    keyspace: str
    local_dc: str | None
    username: str | None
    password: str | None
    replication_factor: int

    def redacted(self) -> str:
        auth = f"{self.username}:***@" if self.username else ""
        dc = f"?dc={self.local_dc}" if self.local_dc else ""
        return f"cassandra://{auth}{','.join(self.hosts)}:{self.port}/{self.keyspace}{dc}"


def parse_cassandra_url(url: str) -> CassandraUrl:
    """``cassandra://[user:password@]host1,host2[:port]/keyspace?dc=DC[&rf=N]``.

    One port for all hosts (the driver connects to every node on the same port). ``rf`` is the
    replication factor used only when ``init_schema`` creates the keyspace (default 1; say 3 in
    production)."""
    shown = redact_url(url)  # error messages must not leak the password
    scheme, sep, rest = url.partition("://")
    if scheme != "cassandra" or not sep:
        raise ValueError(f"not a Cassandra store URL: {shown!r}")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    credentials, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, _, secret = credentials.partition(":")
        username, password = unquote(user), unquote(secret)
    hosts: list[str] = []
    ports: set[int] = set()
    for entry in filter(None, hostlist.split(",")):
        match = _HOST.fullmatch(entry)
        if match is None:
            raise ValueError(f"bad host {entry!r} in {shown!r} (IPv6 addresses go in brackets)")
        hosts.append(match["v6"] or match["name"])
        if match["port"]:
            ports.add(int(match["port"]))
    if not hosts:
        raise ValueError(f"no Cassandra host in {shown!r}")
    if len(ports) > 1:
        raise ValueError(f"hosts on different ports in {shown!r}: the driver uses one port for every node")
    keyspace = unquote(path.strip("/")) or DEFAULT_KEYSPACE
    if not _KEYSPACE_NAME.match(keyspace):
        raise ValueError(f"bad keyspace name {keyspace!r}: letters, digits and _ only, at most 48")
    params = {key: values[-1] for key, values in parse_qs(query).items()}
    unknown = set(params) - {"dc", "rf"}
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} in {shown!r} (known: dc, rf)")
    return CassandraUrl(
        hosts=tuple(hosts),
        port=ports.pop() if ports else DEFAULT_PORT,
        keyspace=keyspace,
        local_dc=params.get("dc") or None,
        username=username,
        password=password,
        replication_factor=int(params.get("rf", 1)),
    )
