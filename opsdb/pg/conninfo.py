"""libpq connection strings: parse (key=value and postgresql:// URIs), render, split off the password.

Passwords never go into a child's argv: split_password() moves them to PGPASSWORD in the child's
environment. Parsing follows libpq (https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING):
values may be single-quoted with \\' and \\\\ escapes; URIs are percent-decoded and may list several hosts.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote

from opsdb.errors import UsageError

SECRET_KEYS = frozenset({"password", "sslpassword"})
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _bad(reason: str) -> UsageError:
    return UsageError(f"invalid connection string: {reason}", hint="use key=value pairs or a postgresql:// URI")


def parse_conninfo(conninfo: str) -> dict[str, str]:
    """The keywords of a libpq connection string (either form), in order."""
    text = conninfo.strip()
    if text.startswith(("postgresql://", "postgres://")):
        return _parse_uri(text)
    return _parse_pairs(text)


def _parse_pairs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return out
        m = _KEY.match(text, i)
        if not m:
            raise _bad(f"expected a keyword at position {i}")
        key = m.group(0)
        i = m.end()
        while i < n and text[i].isspace():
            i += 1
        if i >= n or text[i] != "=":
            raise _bad(f'missing "=" after "{key}"')
        i += 1
        while i < n and text[i].isspace():
            i += 1
        value: list[str] = []
        if i < n and text[i] == "'":
            i += 1
            while True:
                if i >= n:
                    raise _bad(f'unterminated quoted value for "{key}"')
                ch = text[i]
                if ch == "\\" and i + 1 < n:
                    value.append(text[i + 1])
                    i += 2
                elif ch == "'":
                    i += 1
                    break
                else:
                    value.append(ch)
                    i += 1
        else:
            while i < n and not text[i].isspace():
                if text[i] == "\\" and i + 1 < n:
                    value.append(text[i + 1])
                    i += 2
                else:
                    value.append(text[i])
                    i += 1
        out[key] = "".join(value)


def _parse_uri(text: str) -> dict[str, str]:
    rest = text.split("://", 1)[1]
    query = ""
    if "?" in rest:
        rest, query = rest.split("?", 1)
    path = ""
    if "/" in rest:
        rest, path = rest.split("/", 1)
    out: dict[str, str] = {}
    if "@" in rest:
        userinfo, rest = rest.rsplit("@", 1)
        user, sep, password = userinfo.partition(":")
        if user:
            out["user"] = unquote(user)
        if sep:
            out["password"] = unquote(password)
    hosts: list[str] = []
    ports: list[str] = []
    for spec in rest.split(",") if rest else []:
        if spec.startswith("["):
            host, _, after = spec[1:].partition("]")
            port = after[1:] if after.startswith(":") else ""
        else:
            host, _, port = spec.partition(":")
        hosts.append(unquote(host))
        ports.append(unquote(port))
    if any(hosts):
        out["host"] = ",".join(hosts)
    if any(ports):
        out["port"] = ",".join(ports)
    if path:
        out["dbname"] = unquote(path)
    try:
        params = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise _bad("malformed URI query parameters") from None
    for key, value in params:
        if key == "ssl" and value == "true":
            key, value = "sslmode", "require"
        out[key] = value
    return out


def _quote(value: str) -> str:
    if value and not any(c.isspace() or c in "'\\" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def make_conninfo(params: dict[str, str]) -> str:
    """Render keywords as a key=value connection string, quoting where needed."""
    return " ".join(f"{k}={_quote(v)}" for k, v in params.items())


def split_password(conninfo: str) -> tuple[str, dict[str, str]]:
    """(conninfo without its password, {"PGPASSWORD": pw} or {}). A string without a password is returned as is."""
    params = parse_conninfo(conninfo)
    if "password" not in params:
        return conninfo, {}
    password = params.pop("password")
    return make_conninfo(params), {"PGPASSWORD": password}


def with_dbname(conninfo: str, dbname: str) -> str:
    """The same connection string pointing at another database."""
    params = parse_conninfo(conninfo)
    params["dbname"] = dbname
    return make_conninfo(params)


def conninfo_get(conninfo: str, key: str, default: str | None = None) -> str | None:
    return parse_conninfo(conninfo).get(key, default)


def redact(conninfo: str) -> str:
    """The connection string safe for messages and logs: secrets removed, never echoed if unparseable."""
    try:
        params = parse_conninfo(conninfo)
    except UsageError:
        return "<unparseable connection string>"
    return make_conninfo({k: ("***" if k in SECRET_KEYS else v) for k, v in params.items()}) or "(defaults)"
