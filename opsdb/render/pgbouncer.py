"""pgbouncer.ini and userlist.txt as text: deterministic (sorted keys, stable spacing), commented.

PgBouncer's parser has no escaping and no end-of-line comments (ops-conventions §1.1), so a comment
always sits on its own line before the key it explains, and a value with a newline is refused.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping

from opsdb.errors import UsageError
from opsdb.model.pgbouncer_ini import UserEntry

_PLAIN_DB_NAME = re.compile(r"^[_0-9A-Za-z]+$")
_PLAIN_CONN_VALUE = re.compile(r"^[^\s']+$")


@dataclasses.dataclass(frozen=True)
class IniEntry:
    key: str
    value: str
    comment: str | None = None  # why this value (written as a ';' line above it)
    skipped: str | None = None  # set: written commented out, with this reason


def clean_value(value: str, *, what: str) -> str:
    if re.search(r"[\r\n\v\f\x85\u2028\u2029]", value):
        raise UsageError(f"unable to write {what}: the value contains a line break")
    return value


def quote_db_name(name: str) -> str:
    """[databases] keys: plain when _0-9A-Za-z, else SQL-identifier quoting."""
    clean_value(name, what=f"database name {name!r}")
    if _PLAIN_DB_NAME.match(name):
        return name
    return '"' + name.replace('"', '""') + '"'


def connstr(params: Mapping[str, str | int]) -> str:
    """A [databases] value from key=value pairs in the given order. PgBouncer's parser (util.c
    cstr_get_value) ends a bare value at a space and reads '...' with '' for a quote, no backslashes."""
    parts = []
    for key, raw in params.items():
        value = clean_value(str(raw), what=f"{key}")
        if not _PLAIN_CONN_VALUE.match(value):
            value = "'" + value.replace("'", "''") + "'"
        parts.append(f"{key}={value}")
    return " ".join(parts)


def _comment_lines(text: str) -> list[str]:
    return [f"; {line}".rstrip() for line in text.splitlines()]


def _entry_lines(entry: IniEntry) -> list[str]:
    lines = _comment_lines(entry.comment) if entry.comment else []
    value = clean_value(entry.value, what=entry.key)
    if entry.skipped:
        lines.append(f";{entry.key} = {value}")
        lines.extend(_comment_lines(f"  (not written: {entry.skipped})"))
    else:
        lines.append(f"{entry.key} = {value}")
    return lines


def render_ini(header: Iterable[str], sections: Iterable[tuple[str, Iterable[IniEntry]]]) -> str:
    """The file: header comment block, then each section with its keys sorted (same input, same bytes)."""
    out = _comment_lines("\n".join(header))
    for name, entries in sections:
        out.append("")
        out.append(f"[{name}]")
        for entry in sorted(entries, key=lambda e: e.key):
            out.extend(_entry_lines(entry))
    return "\n".join(out) + "\n"


def render_userlist(entries: Iterable[UserEntry]) -> str:
    """auth_file: one '"user" "secret"' line per user, sorted by user name. No comments: older
    PgBouncer versions stop reading the file ("broken auth file") at the first line not starting with '"'."""
    lines: list[str] = []
    for entry in sorted(entries, key=lambda e: e.user):
        user = clean_value(entry.user, what="user name").replace('"', '""')
        secret = clean_value(entry.secret, what=f"secret of {entry.user!r}").replace('"', '""')
        lines.append(f'"{user}" "{secret}"')
    return "\n".join(lines) + "\n"
