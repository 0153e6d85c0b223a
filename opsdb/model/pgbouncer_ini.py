"""pgbouncer.ini as data: the known keys (with the version that introduced them), a parser that
behaves like PgBouncer's (libusual cfparser), and the checks that need nothing but the text.

Facts used (ops-conventions §1.1-1.2): `;`/`#` start a comment only at the beginning of a line; an
unknown key or an invalid value makes PgBouncer refuse to start; the database name `pgbouncer` is
reserved for the admin console; values cannot contain newlines.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

Version = tuple[int, int, int]
NEWEST_KNOWN: Version = (1, 25, 0)

_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclasses.dataclass(frozen=True)
class KeySpec:
    kind: str  # int | time | str | enum
    since: Version = (1, 0, 0)
    choices: tuple[str, ...] = ()


def _k(kind: str, since: Version = (1, 0, 0), choices: tuple[str, ...] = ()) -> KeySpec:
    return KeySpec(kind, since, choices)


# [pgbouncer] keys, from src/main.c bouncer_params; "since" from NEWS.md (ops-conventions §1.2).
PGBOUNCER_KEYS: dict[str, KeySpec] = {
    "admin_users": _k("str"),
    "application_name_add_host": _k("int"),
    "auth_dbname": _k("str", (1, 19, 0)),
    "auth_file": _k("str"),
    "auth_hba_file": _k("str", (1, 7, 0)),
    "auth_ident_file": _k("str", (1, 23, 0)),
    "auth_ldap_options": _k("str", (1, 25, 0)),
    "auth_query": _k("str", (1, 6, 0)),
    "auth_type": _k("enum", choices=("any", "trust", "plain", "md5", "cert", "hba", "ldap", "pam", "scram-sha-256")),
    "auth_user": _k("str", (1, 8, 0)),
    "autodb_idle_timeout": _k("time"),
    "cancel_wait_timeout": _k("time", (1, 19, 0)),
    "client_idle_timeout": _k("time"),
    "client_login_timeout": _k("time"),
    "client_tls13_ciphers": _k("str", (1, 25, 0)),
    "client_tls_ca_file": _k("str"),
    "client_tls_cert_file": _k("str"),
    "client_tls_ciphers": _k("str"),
    "client_tls_dheparams": _k("str"),
    "client_tls_ecdhcurve": _k("str"),
    "client_tls_key_file": _k("str"),
    "client_tls_protocols": _k("str"),
    "client_tls_sslmode": _k("enum", choices=_SSLMODES),
    "conffile": _k("str"),
    "default_pool_size": _k("int"),
    "disable_pqexec": _k("int"),
    "dns_max_ttl": _k("time"),
    "dns_nxdomain_ttl": _k("time"),
    "dns_zone_check_period": _k("time"),
    "idle_transaction_timeout": _k("time"),
    "ignore_startup_parameters": _k("str"),
    "job_name": _k("str"),
    "listen_addr": _k("str"),
    "listen_backlog": _k("int"),
    "listen_port": _k("int"),
    "log_connections": _k("int"),
    "log_disconnections": _k("int"),
    "log_pooler_errors": _k("int"),
    "log_stats": _k("int"),
    "logfile": _k("str"),
    "max_client_conn": _k("int"),
    "max_db_client_connections": _k("int", (1, 24, 0)),
    "max_db_connections": _k("int", (1, 6, 0)),
    "max_packet_size": _k("int"),
    "max_prepared_statements": _k("int", (1, 21, 0)),
    "max_user_client_connections": _k("int", (1, 24, 0)),
    "max_user_connections": _k("int", (1, 6, 0)),
    "min_pool_size": _k("int", (1, 5, 0)),
    "peer_id": _k("int", (1, 19, 0)),
    "pidfile": _k("str"),
    "pkt_buf": _k("int"),
    "pool_mode": _k("enum", choices=("session", "transaction", "statement")),
    "query_timeout": _k("time"),
    "query_wait_notify": _k("int", (1, 22, 0)),
    "query_wait_timeout": _k("time"),
    "reserve_pool_size": _k("int", (1, 3, 0)),
    "reserve_pool_timeout": _k("time", (1, 3, 0)),
    "resolv_conf": _k("str"),
    "sbuf_loopcnt": _k("int"),
    "scram_iterations": _k("int", (1, 25, 0)),
    "server_check_delay": _k("time"),
    "server_check_query": _k("str"),
    "server_connect_timeout": _k("time"),
    "server_fast_close": _k("int"),
    "server_idle_timeout": _k("time"),
    "server_lifetime": _k("time"),
    "server_login_retry": _k("time"),
    "server_reset_query": _k("str"),
    "server_reset_query_always": _k("int"),
    "server_round_robin": _k("int"),
    "server_tls13_ciphers": _k("str", (1, 25, 0)),
    "server_tls_ca_file": _k("str"),
    "server_tls_cert_file": _k("str"),
    "server_tls_ciphers": _k("str"),
    "server_tls_key_file": _k("str"),
    "server_tls_protocols": _k("str"),
    "server_tls_sslmode": _k("enum", choices=_SSLMODES),
    "so_reuseport": _k("int", (1, 12, 0)),
    "stats_period": _k("int"),
    "stats_users": _k("str"),
    "suspend_timeout": _k("time"),
    "syslog": _k("int"),
    "syslog_facility": _k("str"),
    "syslog_ident": _k("str"),
    "tcp_defer_accept": _k("int"),
    "tcp_keepalive": _k("int"),
    "tcp_keepcnt": _k("int"),
    "tcp_keepidle": _k("int"),
    "tcp_keepintvl": _k("int"),
    "tcp_socket_buffer": _k("int"),
    "tcp_user_timeout": _k("int"),
    "track_extra_parameters": _k("str", (1, 20, 0)),
    "transaction_timeout": _k("time", (1, 25, 0)),
    "unix_socket_dir": _k("str"),
    "unix_socket_group": _k("str"),
    "unix_socket_mode": _k("int"),
    "user": _k("str"),
    "verbose": _k("int"),
}

# keys accepted in a [databases] connection string
DATABASE_KEYS: dict[str, KeySpec] = {
    "dbname": _k("str"),
    "host": _k("str"),
    "port": _k("int"),
    "user": _k("str"),
    "password": _k("str"),
    "auth_user": _k("str"),
    "auth_query": _k("str", (1, 22, 0)),
    "auth_dbname": _k("str", (1, 19, 0)),
    "pool_size": _k("int"),
    "min_pool_size": _k("int", (1, 16, 0)),
    "reserve_pool": _k("int"),
    "reserve_pool_size": _k("int", (1, 24, 0)),
    "max_db_connections": _k("int", (1, 6, 0)),
    "max_db_client_connections": _k("int", (1, 24, 0)),
    "pool_mode": _k("enum", (1, 6, 0), ("session", "transaction", "statement")),
    "server_lifetime": _k("time", (1, 23, 0)),
    "connect_query": _k("str"),
    "application_name": _k("str"),
    "client_encoding": _k("str"),
    "datestyle": _k("str"),
    "timezone": _k("str"),
    "load_balance_hosts": _k("enum", (1, 24, 0), ("disable", "round-robin")),
}

KNOWN_SECTIONS = {"pgbouncer": (1, 0, 0), "databases": (1, 0, 0), "users": (1, 0, 0), "peers": (1, 19, 0)}


def version_str(version: Version) -> str:
    return ".".join(str(p) for p in version)


def parse_version(text: str) -> Version | None:
    """'PgBouncer 1.18.0' (first line of `pgbouncer -V`) -> (1, 18, 0)."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


@dataclasses.dataclass(frozen=True)
class IniLine:
    section: str
    key: str
    value: str
    lineno: int


@dataclasses.dataclass(frozen=True)
class Finding:
    level: str  # error | warning
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"level": self.level, "message": self.message}


@dataclasses.dataclass
class IniDocument:
    lines: list[IniLine]
    findings: list[Finding]

    def section(self, name: str) -> dict[str, str]:
        """Key -> value of one section; the last occurrence wins, as in PgBouncer."""
        return {ln.key: ln.value for ln in self.lines if ln.section == name}

    def value(self, key: str, default: str | None = None) -> str | None:
        return self.section("pgbouncer").get(key, default)


def parse_ini(text: str) -> IniDocument:
    """Parse like libusual cfparser; syntax problems become error findings (PgBouncer would not start)."""
    lines: list[IniLine] = []
    findings: list[Finding] = []
    section: str | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("%include"):
            findings.append(Finding("warning", f"line {lineno}: %include is not followed by this check"))
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                findings.append(Finding("error", f"line {lineno}: malformed section header {line!r}"))
                continue
            section = line[1:-1].strip().lower()
            continue
        if "=" not in line:
            findings.append(Finding("error", f"line {lineno}: expected 'key = value', got {line!r}"))
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if section is None:
            findings.append(Finding("error", f"line {lineno}: {key!r} is outside any section"))
            continue
        lines.append(IniLine(section, key if section == "databases" else key.lower(), value, lineno))
    return IniDocument(lines, findings)


def parse_connstr(text: str) -> dict[str, str]:
    """A [databases] value: key=value pairs, values optionally in '...' with '' for a quote (PgBouncer's rules)."""
    out: dict[str, str] = {}
    pos = 0
    pattern = re.compile(r"\s*([A-Za-z_]+)\s*=\s*('(?:[^']|'')*'|[^\s']+)")
    while pos < len(text):
        if not text[pos:].strip():
            break
        match = pattern.match(text, pos)
        if not match:
            raise ValueError(f"cannot parse {text[pos:]!r}")
        value = match.group(2)
        if value.startswith("'"):
            value = value[1:-1].replace("''", "'")
        out[match.group(1).lower()] = value
        pos = match.end()
    return out


def _type_problem(spec: KeySpec, value: str) -> str | None:
    if spec.kind == "int":
        if not re.fullmatch(r"-?\d+", value):
            return "must be an integer"
    elif spec.kind == "time":
        if not re.fullmatch(r"\d+(\.\d+)?", value):
            return "must be a number of seconds"
    elif spec.kind == "enum" and value.lower() not in spec.choices:
        return f"must be one of {', '.join(spec.choices)}"
    return None


def _check_key(where: str, key: str, value: str, spec: KeySpec | None, version: Version) -> Iterable[Finding]:
    if spec is None:
        yield Finding("error", f"{where}: unknown parameter {key!r} (PgBouncer refuses to start)")
        return
    if version < spec.since:
        yield Finding(
            "error",
            f"{where}: {key!r} needs PgBouncer >= {version_str(spec.since)} (target is {version_str(version)})",
        )
    problem = _type_problem(spec, value)
    if problem:
        yield Finding("error", f"{where}: invalid value {value!r} for {key}: {problem}")


def check_text(doc: IniDocument, version: Version = NEWEST_KNOWN) -> list[Finding]:
    """Every check that needs only the file's text: sections, keys, types, database entries."""
    findings = list(doc.findings)
    sections = {ln.section for ln in doc.lines}
    if "pgbouncer" not in sections:
        findings.append(Finding("error", "the [pgbouncer] section is missing (PgBouncer refuses to start)"))
    for name in sorted(sections - set(KNOWN_SECTIONS)):
        findings.append(Finding("error", f"unknown section [{name}]"))
    seen: dict[tuple[str, str], int] = {}
    for ln in doc.lines:
        where = f"line {ln.lineno}"
        if (ln.section, ln.key) in seen:
            findings.append(
                Finding("warning", f"{where}: {ln.key!r} repeats line {seen[ln.section, ln.key]}; the last wins")
            )
        seen[ln.section, ln.key] = ln.lineno
        if ln.section == "pgbouncer":
            findings.extend(_check_key(where, ln.key, ln.value, PGBOUNCER_KEYS.get(ln.key), version))
        elif ln.section == "databases":
            findings.extend(_check_database(where, ln.key, ln.value, version))
    findings.extend(_cross_checks(doc))
    return findings


def _check_database(where: str, name: str, value: str, version: Version) -> Iterable[Finding]:
    if name.lower() == "pgbouncer":
        yield Finding("error", f"{where}: the database name 'pgbouncer' is reserved for the admin console")
    try:
        params = parse_connstr(value)
    except ValueError as exc:
        yield Finding("error", f"{where}: database {name!r}: {exc}")
        return
    for key, val in params.items():
        yield from _check_key(f"{where} (database {name})", key, val, DATABASE_KEYS.get(key), version)


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _cross_checks(doc: IniDocument) -> Iterable[Finding]:
    main = doc.section("pgbouncer")
    pool = _int(main.get("default_pool_size"), 20)
    min_pool = _int(main.get("min_pool_size"), 0)
    if min_pool > pool:
        yield Finding("error", f"min_pool_size {min_pool} is larger than default_pool_size {pool}")
    sslmode = main.get("client_tls_sslmode", "disable").lower()
    if sslmode != "disable" and not (main.get("client_tls_cert_file") and main.get("client_tls_key_file")):
        yield Finding("error", f"client_tls_sslmode = {sslmode} needs client_tls_cert_file and client_tls_key_file")
    auth_type = main.get("auth_type", "md5").lower()
    if auth_type in AUTH_FILE_TYPES and not main.get("auth_file") and not main.get("auth_user"):
        yield Finding("error", f"auth_type = {auth_type} needs auth_file (or auth_user + auth_query)")
    if auth_type == "hba" and not main.get("auth_hba_file"):
        yield Finding("error", "auth_type = hba needs auth_hba_file")
    auth_dbname = main.get("auth_dbname")
    if auth_dbname and auth_dbname not in doc.section("databases"):
        yield Finding("error", f"auth_dbname {auth_dbname!r} is not a [databases] entry (auth_query would fail)")
    if bool(main.get("server_tls_cert_file")) != bool(main.get("server_tls_key_file")):
        yield Finding("error", "server_tls_cert_file and server_tls_key_file go together")
    if auth_type in ("trust", "any", "plain"):
        yield Finding("warning", f"auth_type = {auth_type} does not protect the pooler with a password")
    if not main.get("listen_addr") and main.get("unix_socket_dir") == "":
        yield Finding("error", "no listen_addr and unix_socket_dir is empty: PgBouncer would listen nowhere")
    if main.get("pool_mode", "session").lower() != "session" and main.get("server_reset_query_always") == "1":
        yield Finding(
            "warning", "server_reset_query_always = 1 with a non-session pool_mode costs a query per transaction"
        )


# auth types that read user entries from auth_file (PgBouncer's requires_auth_file)
AUTH_FILE_TYPES = ("trust", "plain", "md5", "cert", "hba", "scram-sha-256")


@dataclasses.dataclass(frozen=True)
class UserEntry:
    user: str
    secret: str

    @property
    def kind(self) -> str:
        if self.secret.startswith("SCRAM-SHA-256$"):
            return "scram"
        if re.fullmatch(r"md5[0-9a-f]{32}", self.secret):
            return "md5"
        return "plain"


def parse_userlist(text: str) -> tuple[list[UserEntry], list[Finding]]:
    """auth_file lines: "user" "secret" with "" escaping a quote; the rest of the line is ignored."""
    entries: list[UserEntry] = []
    findings: list[Finding] = []
    field = re.compile(r'\s*"((?:[^"]|"")*)"')
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith(";"):
            continue
        if not raw.lstrip().startswith('"'):
            findings.append(
                Finding("error", f"auth_file line {lineno}: PgBouncer stops reading here (broken auth file)")
            )
            break
        first = field.match(raw)
        second = field.match(raw, first.end()) if first else None
        if not (first and second):
            findings.append(Finding("error", f"auth_file line {lineno}: expected two double-quoted fields"))
            continue
        entries.append(UserEntry(first.group(1).replace('""', '"'), second.group(1).replace('""', '"')))
    return entries, findings


def check_userlist(entries: list[UserEntry], auth_type: str) -> list[Finding]:
    findings: list[Finding] = []
    for entry in entries:
        if entry.kind == "plain" and entry.secret:
            findings.append(Finding("warning", f"auth_file: user {entry.user!r} has a plain-text password"))
        if auth_type == "scram-sha-256" and entry.kind == "md5":
            findings.append(
                Finding(
                    "error",
                    f"auth_file: user {entry.user!r} has an MD5 secret, which auth_type scram-sha-256 cannot use",
                )
            )
    return findings
