"""PgBouncer's auth_hba_file (auth_type = hba), checked the way src/hba.c reads it.

Why a check of our own: PgBouncer does not refuse to start over a bad HBA file. It logs
"could not parse hba config line N", drops that line (a missing file: every rule) and carries on,
so logins the line was meant to allow are then rejected. opsdb reports such lines before they
lock anyone out, and `pgbouncer check` also reads the real binary's log for the same warnings.

Format (PgBouncer's subset of pg_hba.conf): `local DATABASE USER METHOD` or
`host|hostssl|hostnossl DATABASE USER ADDRESS[/BITS] [MASK] METHOD`. DATABASE and USER are comma
lists of names, "quoted names", `all`, `sameuser`, `replication` (1.23+) and `@file` (relative to the HBA file). No
`samerole`/`samegroup`/`+group`, no host names or `all`/`samehost`/`samenet` as address, no options.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from opsdb.model.pgbouncer_ini import Finding, Version, version_str

HBA_TYPES = ("local", "host", "hostssl", "hostnossl")
# method -> first PgBouncer version that accepts it in the HBA file
HBA_METHODS: dict[str, Version] = {
    "trust": (1, 7, 0),
    "reject": (1, 7, 0),
    "md5": (1, 7, 0),
    "password": (1, 7, 0),
    "peer": (1, 7, 0),
    "cert": (1, 7, 0),
    "scram-sha-256": (1, 11, 0),
    "ldap": (1, 25, 0),
}
REPLICATION_SINCE: Version = (1, 23, 0)  # replication connections through PgBouncer
_TOKEN = re.compile(r'\s*(?:"((?:[^"]|"")*)"|(,)|([^\s,"#]+)|(#.*))')


def _tokens(line: str) -> list[str | None]:
    """Words of one line; None stands for a comma. Quoted words come back with their quotes."""
    out: list[str | None] = []
    pos = 0
    while pos < len(line) and line[pos:].strip():
        match = _TOKEN.match(line, pos)
        if not match or match.group(4) is not None:
            break
        if match.group(1) is not None:
            out.append(f'"{match.group(1)}"')
        elif match.group(2):
            out.append(None)
        else:
            out.append(match.group(3))
        pos = match.end()
    return out


def _names(tokens: list[str | None], start: int) -> tuple[list[str], int]:
    """A comma list starting at tokens[start]; returns the names and the index after the list."""
    names: list[str] = []
    i = start
    while i < len(tokens) and tokens[i] is not None:
        names.append(str(tokens[i]))
        i += 1
        if i < len(tokens) and tokens[i] is None:
            i += 1
            continue
        break
    return names, i


def _name_problem(name: str, version: Version, base: Path | None) -> str | None:
    if name in ("samerole", "samegroup"):
        return f"{name!r} is not supported"
    if name == "replication" and version < REPLICATION_SINCE:
        return f"'replication' needs PgBouncer >= {version_str(REPLICATION_SINCE)} (target is {version_str(version)})"
    if name.startswith("+"):
        return f"group names ({name}) are not supported"
    if name.startswith("@") and base is not None and not (base / name[1:]).is_file():
        return f"{name}: no such file next to the HBA file"
    return None


def _address_problem(tokens: list[str], i: int) -> tuple[str | None, int]:
    """Checks ADDRESS[/BITS] [MASK] at tokens[i]; returns (problem, index after the address)."""
    if i >= len(tokens):
        return "no address", i
    addr = tokens[i]
    if "/" in addr:
        try:
            ipaddress.ip_network(addr, strict=False)
        except ValueError:
            return f"{addr!r} is not an IP address with /bits", i + 1
        return None, i + 1
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        return f"{addr!r} is not an IP address (PgBouncer takes no host names, all, samehost or samenet)", i + 1
    if i + 1 >= len(tokens):
        return "no mask after the address", i + 1
    try:
        ipaddress.ip_network(f"{addr}/{tokens[i + 1]}", strict=False)
    except ValueError:
        return f"{tokens[i + 1]!r} is not a netmask", i + 2
    return None, i + 2


def check_hba(text: str, version: Version, base: Path | None = None) -> list[Finding]:
    """Every line PgBouncer would drop, as an error naming the line. `base`: the HBA file's directory."""
    findings: list[Finding] = []
    rules = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        tokens = _tokens(raw)
        if not tokens:
            continue
        where = f"auth_hba_file line {lineno}"
        problem = _line_problem(tokens, version, base)
        if problem:
            findings.append(Finding("error", f"{where}: {problem} (PgBouncer ignores this line)"))
        else:
            rules += 1
    if rules == 0:
        findings.append(Finding("error", "auth_hba_file has no usable rule: PgBouncer would reject every login"))
    return findings


def _line_problem(tokens: list[str | None], version: Version, base: Path | None) -> str | None:
    kind = tokens[0]
    if kind not in HBA_TYPES:
        return f"unknown connection type {kind!r} (use {', '.join(HBA_TYPES)})"
    i = 1
    for field in ("database", "user"):
        names, i = _names(tokens, i)
        if not names:
            return f"no {field}"
        for name in names:
            problem = _name_problem(name, version, base)
            if problem:
                return f"{field} {problem}"
    rest = [t for t in tokens[i:] if t is not None]
    if len(rest) != len(tokens) - i:
        return "a comma outside the database and user lists"
    if kind != "local":
        problem, used = _address_problem(rest, 0)
        if problem:
            return problem
        rest = rest[used:]
    if not rest:
        return "no method"
    method = rest[0]
    if method not in HBA_METHODS:
        return f"unknown method {method!r} (use {', '.join(HBA_METHODS)})"
    if version < HBA_METHODS[method]:
        return f"method {method!r} needs PgBouncer >= {version_str(HBA_METHODS[method])} (target is {version_str(version)})"
    if len(rest) > 1 and method != "ldap":
        return f"options after the method ({' '.join(rest[1:])}) are not supported"
    return None
