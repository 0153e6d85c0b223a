"""PostgreSQL binaries: which directory to use, and pure builders for their command lines.

Every builder returns a `Cmd`. Builders that connect take the full connection string and split the
password off into the child's environment (PGPASSWORD), so no password can reach argv by accident.
All connecting tools get -w (never prompt): opsdb runs from cron and archive_command, never at a prompt.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from opsdb.errors import UsageError
from opsdb.pg.conninfo import redact, split_password, with_dbname
from opsdb.proc import Cmd

__all__ = ["PgTools", "find_bin_dir", "major_of_version", "redact", "split_password", "with_dbname", "DEBIAN_ROOT"]

DEBIAN_ROOT = Path("/usr/lib/postgresql")
_MARKERS = ("pg_ctl", "pg_basebackup")


def _installed_majors(root: Path) -> list[int]:
    if not root.is_dir():
        return []
    majors = [int(p.name) for p in root.iterdir() if re.fullmatch(r"\d+", p.name) and (p / "bin").is_dir()]
    return sorted(majors)


def find_bin_dir(pg_bin_dir: Path | None, server_major: int | None = None, *, debian_root: Path = DEBIAN_ROOT) -> Path:
    """The directory holding pg_basebackup & co.

    Order: the configured pg_bin_dir; /usr/lib/postgresql/<server major>/bin; the directory of
    pg_basebackup on PATH; the highest /usr/lib/postgresql/<N>/bin. Client tools must not be older
    than the server (pg_basebackup refuses newer servers), hence the server's major comes first.
    """
    if pg_bin_dir is not None:
        path = Path(pg_bin_dir)
        if not any((path / m).is_file() for m in _MARKERS):
            raise UsageError(
                f"pg_bin_dir {path} has no pg_ctl or pg_basebackup",
                hint="point pg_bin_dir at a PostgreSQL bin directory, e.g. /usr/lib/postgresql/15/bin",
            )
        return path
    if server_major is not None:
        candidate = debian_root / str(server_major) / "bin"
        if candidate.is_dir():
            return candidate
    found = shutil.which("pg_basebackup")
    if found:
        real = Path(found).resolve()
        # Debian's /usr/bin/pg_basebackup is a link to the pg_wrapper script: not a bin directory
        if real.name == "pg_basebackup":
            return real.parent
    majors = _installed_majors(debian_root)
    if majors:
        return debian_root / str(majors[-1]) / "bin"
    raise UsageError(
        "no PostgreSQL binaries found (looked for pg_bin_dir, /usr/lib/postgresql/N/bin and pg_basebackup on PATH)",
        hint="install the PostgreSQL client/server packages or set pg_bin_dir in the cluster's config",
    )


def major_of_version(version_output: str) -> int | None:
    """'pg_dump (PostgreSQL) 15.7 (Debian 15.7-1)' -> 15; 'pg_basebackup (PostgreSQL) 18.6' -> 18; '9.6.24' -> 9."""
    match = re.search(r"\)\s+(\d+)(?:\.(\d+))?", version_output)
    return int(match.group(1)) if match else None


class PgTools:
    """Command-line builders for the binaries in one bin directory."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = Path(bin_dir)

    def path(self, program: str) -> str:
        return str(self.bin_dir / program)

    def _client(
        self,
        program: str,
        args: Sequence[str],
        conninfo: str,
        *,
        run_as: str | None,
        timeout: float | None,
        extra_env: dict[str, str] | None = None,
    ) -> Cmd:
        bare, env = split_password(conninfo)
        if extra_env:
            env = {**extra_env, **env}
        # -d takes a full connection string for every tool used here (not a bare database name)
        return Cmd((self.path(program), *args, "-d", bare), env=env or None, run_as=run_as, timeout=timeout)

    def version(self, program: str) -> Cmd:
        """`<program> --version`, e.g. "pg_dump (PostgreSQL) 15.7"."""
        return Cmd((self.path(program), "--version"), timeout=30)

    # --- backups ---------------------------------------------------------------------------------

    def pg_basebackup(
        self,
        conninfo: str,
        *,
        pgdata: str = "-",
        fmt: Literal["tar", "plain"] = "tar",
        wal: Literal["fetch", "stream", "none"] = "fetch",
        fast_checkpoint: bool = True,
        manifest_checksums: str | None = "SHA256",
        label: str | None = None,
        progress: bool = False,
        max_rate: str | None = None,
        extra: Sequence[str] = (),
        run_as: str | None = None,
        timeout: float | None = None,
    ) -> Cmd:
        """pg_basebackup; `pgdata="-"` writes one tar stream to stdout (WAL must then be fetch or none)."""
        if pgdata == "-" and (fmt != "tar" or wal == "stream"):
            raise UsageError("pg_basebackup can write to stdout only in tar format without WAL streaming")
        args = ["-D", pgdata, "-F", "t" if fmt == "tar" else "p", "-X", wal, "-w"]
        if fast_checkpoint:
            args += ["-c", "fast"]
        if manifest_checksums:
            args.append(f"--manifest-checksums={manifest_checksums}")
        if label:
            args += ["-l", label]
        if progress:
            args.append("-P")
        if max_rate:
            args += ["-r", max_rate]
        return self._client("pg_basebackup", [*args, *extra], conninfo, run_as=run_as, timeout=timeout)

    def pg_dump(
        self,
        conninfo: str,
        *,
        dbname: str | None = None,
        fmt: Literal["custom", "plain", "directory", "tar"] = "custom",
        output: str | None = None,
        extra: Sequence[str] = (),
        run_as: str | None = None,
        timeout: float | None = None,
    ) -> Cmd:
        """pg_dump of one database (`dbname` overrides the connection string's); stdout unless `output`."""
        target = with_dbname(conninfo, dbname) if dbname else conninfo
        args = ["-F", fmt[0], "-w"]
        if output:
            args += ["-f", output]
        return self._client("pg_dump", [*args, *extra], target, run_as=run_as, timeout=timeout)

    def pg_dumpall(
        self,
        conninfo: str,
        *,
        globals_only: bool = True,
        no_role_passwords: bool = False,
        extra: Sequence[str] = (),
        run_as: str | None = None,
        timeout: float | None = None,
    ) -> Cmd:
        args = ["-w"]
        if globals_only:
            args.append("--globals-only")
        if no_role_passwords:
            args.append("--no-role-passwords")
        return self._client("pg_dumpall", [*args, *extra], conninfo, run_as=run_as, timeout=timeout)

    def pg_restore(
        self,
        conninfo: str | None,
        *,
        input_path: str | None = None,
        list_only: bool = False,
        clean: bool = False,
        create: bool = False,
        no_owner: bool = False,
        single_transaction: bool = False,
        exit_on_error: bool = True,
        jobs: int | None = None,
        extra: Sequence[str] = (),
        run_as: str | None = None,
        timeout: float | None = None,
    ) -> Cmd:
        """pg_restore from `input_path` or stdin; into `conninfo`, or listing (-l) when conninfo is None."""
        args: list[str] = []
        if list_only:
            args.append("-l")
        for flag, on in (
            ("--clean", clean),
            ("--if-exists", clean),
            ("--create", create),
            ("--no-owner", no_owner),
            ("--single-transaction", single_transaction),
            ("--exit-on-error", exit_on_error and not list_only),
        ):
            if on:
                args.append(flag)
        if jobs:
            args += ["-j", str(jobs)]
        args += list(extra)
        if input_path:
            args.append(input_path)
        if conninfo is None:
            return Cmd((self.path("pg_restore"), *args), run_as=run_as, timeout=timeout)
        return self._client("pg_restore", ["-w", *args], conninfo, run_as=run_as, timeout=timeout)

    def pg_verifybackup(
        self,
        backup_dir: str,
        *,
        manifest_path: str | None = None,
        no_parse_wal: bool = False,
        wal_directory: str | None = None,
        run_as: str | None = None,
        timeout: float | None = None,
    ) -> Cmd:
        args = [self.path("pg_verifybackup"), "--quiet"]
        if manifest_path:
            args += ["-m", manifest_path]
        if no_parse_wal:
            args.append("-n")
        if wal_directory:
            args += ["-w", wal_directory]
        args.append(backup_dir)
        return Cmd(tuple(args), run_as=run_as, timeout=timeout)

    def pg_amcheck(
        self,
        conninfo: str,
        *,
        all_databases: bool = True,
        heapallindexed: bool = False,
        jobs: int | None = None,
        extra: Sequence[str] = (),
        run_as: str | None = None,
        timeout: float | None = None,
    ) -> Cmd:
        args = ["-w"]
        if all_databases:
            args.append("--all")
        if heapallindexed:
            args.append("--heapallindexed")
        if jobs:
            args += ["-j", str(jobs)]
        # pg_amcheck's -d is a database *pattern*; a connection string goes in --maintenance-db, whose
        # connection options are reused (with the dbname replaced) for every database checked
        bare, env = split_password(conninfo)
        argv = (self.path("pg_amcheck"), *args, *extra, "--maintenance-db", bare)
        return Cmd(argv, env=env or None, run_as=run_as, timeout=timeout)

    def psql(
        self,
        conninfo: str,
        *,
        command: str | None = None,
        file: str | None = None,
        on_error_stop: bool = True,
        tuples_only: bool = False,
        extra: Sequence[str] = (),
        run_as: str | None = None,
        timeout: float | None = None,
    ) -> Cmd:
        """psql without ~/.psqlrc (-X), quiet; reads stdin when neither command nor file is given."""
        args = ["-X", "-q", "-w"]
        if on_error_stop:
            args += ["-v", "ON_ERROR_STOP=1"]
        if tuples_only:
            args += ["-A", "-t"]
        if command is not None:
            args += ["-c", command]
        if file is not None:
            args += ["-f", file]
        return self._client("psql", [*args, *extra], conninfo, run_as=run_as, timeout=timeout)

    # --- server management (run as the data directory's owner) -------------------------------------

    def initdb(
        self,
        data_dir: str,
        *,
        superuser: str = "postgres",
        auth: str = "trust",
        checksums: bool = True,
        encoding: str = "UTF8",
        locale: str = "C",
        extra: Sequence[str] = (),
        run_as: str | None = None,
        timeout: float | None = 300,
    ) -> Cmd:
        args = [self.path("initdb"), "-D", data_dir, "-U", superuser, f"--auth={auth}", "-E", encoding]
        args += [f"--locale={locale}", "--no-instructions"]
        if checksums:
            args.append("-k")
        return Cmd((*args, *extra), run_as=run_as, timeout=timeout)

    def pg_ctl_start(
        self,
        data_dir: str,
        *,
        log_path: str,
        options: Sequence[str] = (),
        wait_seconds: int = 60,
        run_as: str | None = None,
        wait: bool = True,
    ) -> Cmd:
        """pg_ctl start -w (or -W: return at once, the caller watches the server). `options` are postgres
        arguments; pg_ctl hands them to /bin/sh, so each is shell-quoted here."""
        waiting = ["-w", "-t", str(wait_seconds)] if wait else ["-W"]
        argv = [self.path("pg_ctl"), "start", "-D", data_dir, "-l", log_path, *waiting]
        if options:
            argv += ["-o", " ".join(shlex.quote(o) for o in options)]
        return Cmd(tuple(argv), run_as=run_as, timeout=wait_seconds + 30)

    def pg_ctl_stop(
        self, data_dir: str, *, mode: str = "fast", wait_seconds: int = 60, run_as: str | None = None
    ) -> Cmd:
        if mode not in ("smart", "fast", "immediate"):
            raise UsageError(f"unknown shutdown mode {mode!r} (smart, fast or immediate)")
        argv = (self.path("pg_ctl"), "stop", "-D", data_dir, "-m", mode, "-w", "-t", str(wait_seconds))
        return Cmd(argv, run_as=run_as, timeout=wait_seconds + 30)

    def pg_ctl_promote(self, data_dir: str, *, wait_seconds: int = 60, run_as: str | None = None) -> Cmd:
        argv = (self.path("pg_ctl"), "promote", "-D", data_dir, "-w", "-t", str(wait_seconds))
        return Cmd(argv, run_as=run_as, timeout=wait_seconds + 30)

    def pg_ctl_status(self, data_dir: str, *, run_as: str | None = None) -> Cmd:
        """Exit 0 running, 3 not running, 4 no accessible data directory."""
        return Cmd((self.path("pg_ctl"), "status", "-D", data_dir), run_as=run_as, timeout=30)

    def pg_controldata(self, data_dir: str, *, run_as: str | None = None) -> Cmd:
        # LC_ALL=C: the parser reads English labels
        return Cmd((self.path("pg_controldata"), "-D", data_dir), env={"LC_ALL": "C"}, run_as=run_as, timeout=30)
