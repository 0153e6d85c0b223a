"""The server a physical backup reads from: its facts, and the session that holds the backup's WAL.

Both go through `psql` child processes, not an in-process connection: psycopg (with the libpq,
OpenSSL and Kerberos libraries its wheel bundles) costs a backup ~8 MB of peak RSS for three small
queries and one idle session (measured: peak 77.3 -> 69.7 MB, see docs/backup.md).

The WAL from start to stop LSN stays on the server because one psql session holds a temporary
physical replication slot for the length of the backup. psql reads its script from our pipe and
the pipe stays open until the backup ends; when opsdb exits in any way (even kill -9) the pipe
closes, psql reaches end of input and exits, and the server drops the slot with the session, so a
killed run never leaves a slot behind that would retain WAL forever.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from opsdb.errors import DatabaseError, UsageError
from opsdb.model.catalog import Tablespace
from opsdb.pg.conninfo import SECRET_KEYS, parse_conninfo, redact
from opsdb.pg.tools import PgTools, find_bin_dir, major_of_version
from opsdb.proc import Cmd, Runner

log = logging.getLogger("opsdb.backup")

CONNECT_TIMEOUT = "10"  # seconds, as PGCONNECT_TIMEOUT (the conninfo's own connect_timeout wins)
QUERY_TIMEOUT = 60.0  # one psql run for the facts or a slot check
SLOT_WAIT_SECONDS = 30.0  # how long the holding session may take to connect and create its slot
SLOT_POLL_SECONDS = 0.02
KEEPALIVE_SECONDS = 0.25  # how soon a holding psql that exited (slot refused, connection lost) is noticed
RELEASE_WAIT_SECONDS = 30.0  # psql ends at end of input; bounded in case it does not

FACTS_SQL = (
    "SELECT json_build_object("
    "'version', current_setting('server_version'), "
    "'version_num', current_setting('server_version_num')::int, "
    "'system_identifier', (SELECT system_identifier::text FROM pg_control_system()), "
    "'in_recovery', pg_is_in_recovery(), "
    "'summarize_wal', current_setting('summarize_wal', true), "
    "'tablespaces', (SELECT coalesce(json_agg(json_build_object('oid', oid::int, 'name', spcname, "
    "'location', pg_tablespace_location(oid)) ORDER BY spcname), '[]'::json) "
    "FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')))"
)


@dataclasses.dataclass(frozen=True)
class ServerFacts:
    conninfo: str
    version: str
    version_num: int
    system_identifier: str
    in_recovery: bool
    tablespaces: tuple[Tablespace, ...]
    summarize_wal: bool | None = None  # None before PostgreSQL 17 (no WAL summaries)

    @property
    def major(self) -> int:
        return self.version_num // 10000


def bin_dir_for_server(bin_dir: Path, configured: bool, server_major: int, runner: Runner) -> Path:
    """The bin directory whose pg_basebackup can back up this server: the configured one, else the one of
    the server's major (find_bin_dir). pg_basebackup refuses a server of a newer major, so an older one is
    a usage error here, before anything is stored."""
    if not configured:
        bin_dir = find_bin_dir(None, server_major)
    out = runner.run(PgTools(bin_dir).version("pg_basebackup"), doing="asking pg_basebackup for its version").text
    client_major = major_of_version(out)
    if client_major is not None and client_major < server_major:
        raise UsageError(
            f"pg_basebackup {client_major} in {bin_dir} cannot back up a PostgreSQL {server_major} server",
            hint=f"set pg_bin_dir to PostgreSQL {server_major}'s bin directory (or a newer one)",
        )
    return bin_dir


def _psql(bin_dir: Path, conninfo: str, *, command: str | None = None, timeout: float | None = None) -> Cmd:
    cmd = PgTools(bin_dir).psql(conninfo, command=command, tuples_only=True, timeout=timeout)
    env = {"PGCONNECT_TIMEOUT": CONNECT_TIMEOUT, "PGAPPNAME": "opsdb", **(cmd.env or {})}
    return Cmd(cmd.argv, env=env, timeout=cmd.timeout)


def _error(conninfo: str, stderr: bytes) -> DatabaseError:
    """psql's message as one line, the conninfo redacted and any secret of it scrubbed."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    text = " ".join(line.removeprefix("psql: error: ").removeprefix("psql:<stdin>:1: ") for line in lines)
    with contextlib.suppress(Exception):
        for key, value in parse_conninfo(conninfo).items():
            if key in SECRET_KEYS and value:
                text = text.replace(value, "***")
    text = text.replace("connection to server ", "", 1) if text.startswith("connection to server ") else text
    return DatabaseError(f"unable to query {redact(conninfo)}: {text or 'psql failed without a message'}")


def server_facts(conninfo: str, bin_dir: Path, runner: Runner) -> ServerFacts:
    """Version, system identifier, recovery state and user tablespaces, in one query."""
    done = runner.run(_psql(bin_dir, conninfo, command=FACTS_SQL, timeout=QUERY_TIMEOUT), check=False)
    if done.returncode != 0:
        raise _error(conninfo, done.stderr)
    try:
        doc = json.loads(done.stdout)
        return ServerFacts(
            conninfo=conninfo,
            version=str(doc["version"]).split()[0],
            version_num=int(doc["version_num"]),
            system_identifier=str(doc["system_identifier"]),
            in_recovery=bool(doc["in_recovery"]),
            summarize_wal=None if doc.get("summarize_wal") is None else doc["summarize_wal"] == "on",
            tablespaces=tuple(
                Tablespace(int(t["oid"]), str(t["name"]), str(t["location"] or "")) for t in doc["tablespaces"]
            ),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise DatabaseError(
            f"unable to read server facts from {redact(conninfo)}: unexpected psql output ({exc})"
        ) from None


def choose_source(
    conninfo: str, standby_conninfos: tuple[str, ...], from_standby: bool, cluster: str, bin_dir: Path, runner: Runner
) -> ServerFacts:
    """The server to back up: the cluster's conninfo, or with --from-standby a standby (the
    conninfo itself when it is one, else the first configured replica in recovery)."""
    facts = server_facts(conninfo, bin_dir, runner)
    if not from_standby or facts.in_recovery:
        return facts
    tried = []
    for candidate_conninfo in standby_conninfos:
        try:
            candidate = server_facts(candidate_conninfo, bin_dir, runner)
        except DatabaseError as exc:
            tried.append(str(exc))
            continue
        if candidate.in_recovery:
            if candidate.system_identifier != facts.system_identifier:
                raise UsageError(
                    f"unable to back up from a standby: replica {redact(candidate_conninfo)} belongs to another "
                    f"cluster (system identifier {candidate.system_identifier}, primary {facts.system_identifier})"
                )
            return candidate
        tried.append(f"{redact(candidate_conninfo)} is not in recovery")
    detail = "; ".join(tried) if tried else "no replicas configured"
    raise UsageError(
        f"unable to back up cluster {cluster} from a standby: the conninfo points at a primary and no "
        f"configured replica is a usable standby ({detail})",
        hint="add [[clusters.NAME.replicas]] entries, or run without --from-standby",
    )


class _SlotHolder(threading.Thread):
    """Runs one psql whose script creates the slot and then waits, open, until release()."""

    def __init__(self, runner: Runner, cmd: Cmd, slot: str) -> None:
        super().__init__(name="opsdb-backup-slot", daemon=True)
        self.runner, self.cmd, self.slot = runner, cmd, slot
        self.error: BaseException | None = None
        self._release = threading.Event()

    def _script(self) -> Iterator[bytes]:
        yield f"SELECT pg_create_physical_replication_slot('{self.slot}', true, true);\n".encode()
        # stdin stays open: the session, and with it the slot, lives on. An empty line now and then
        # costs psql nothing and shows us at once when it has exited (broken pipe: feed raises).
        while not self._release.wait(KEEPALIVE_SECONDS):
            yield b"\n"

    def run(self) -> None:
        try:
            self.runner.feed(self.cmd, self._script(), doing="holding the backup's replication slot")
        except BaseException as exc:  # reported by slot_session as a warning: the backup goes on
            self.error = exc

    def release(self) -> None:
        self._release.set()
        self.join(RELEASE_WAIT_SECONDS)


def _slot_exists(conninfo: str, bin_dir: Path, runner: Runner, slot: str) -> bool:
    sql = f"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"
    done = runner.run(_psql(bin_dir, conninfo, command=sql, timeout=QUERY_TIMEOUT), check=False)
    return done.returncode == 0 and done.stdout.strip() == b"1"


def _holding_problem(holder: _SlotHolder, conninfo: str, bin_dir: Path, runner: Runner) -> str | None:
    """None once the holder's slot exists; else why there is none (bounded wait)."""
    deadline = time.monotonic() + SLOT_WAIT_SECONDS
    while time.monotonic() < deadline:
        if _slot_exists(conninfo, bin_dir, runner, holder.slot):
            return None
        if not holder.is_alive():
            return str(holder.error) if holder.error else "the holding session ended"
        time.sleep(SLOT_POLL_SECONDS)
    return f"the slot did not appear within {SLOT_WAIT_SECONDS:.0f} s"


@contextlib.contextmanager
def slot_session(conninfo: str, bin_dir: Path, runner: Runner) -> Iterator[ServerFacts]:
    """Hold a temporary physical slot reserving WAL from now on, for the length of the backup.

    The slot name is ours (hex), so it is safe inside the SQL text."""
    facts = server_facts(conninfo, bin_dir, runner)  # re-read inside the lock: tablespaces may have changed
    slot = f"opsdb_backup_{uuid.uuid4().hex[:16]}"
    holder = _SlotHolder(runner, _psql(bin_dir, conninfo), slot)
    holder.start()
    try:
        problem = _holding_problem(holder, conninfo, bin_dir, runner)
        if problem is not None:
            log.warning("no temporary replication slot (%s): WAL may be recycled during a long backup", problem)
        yield facts
    finally:
        holder.release()
