"""`check` as PostgreSQL uses opsdb: the archive_command's own opsdb, run as os_user with the server's
environment, and a WAL switch that must reach the repository (as pgBackRest's `check` does).

- `as_server`: runs `<the archive_command's opsdb and options> archive-probe` as the cluster's os_user
  (through runuser when opsdb runs as root) with the environment the running server has (read from
  /proc/<postmaster>/environ when the server is local and readable; else a clean login environment).
  The probe (health.probe) reports whether that opsdb loads its config, reads the key, writes the
  repository and the spool, and which cloud credentials it sees.
- `inaccessible`: the entries of a file:// repository or a spool that the server's user could not use
  (a tree root wrote before the privilege model, or chowned by hand).
- `prove_archiving`: pg_create_restore_point + pg_switch_wal, then wait (bounded) until that segment is
  in the repository; stops early when pg_stat_archiver reports that very segment failed.
"""

from __future__ import annotations

import grp
import json
import os
import shlex
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsdb.model.results import Status
from opsdb.ops.common.privileges import Account
from opsdb.proc import python_module

if TYPE_CHECKING:
    from opsdb.config import ClusterConfig, Settings

OK, WARNING, CRITICAL, UNKNOWN = Status.OK, Status.WARNING, Status.CRITICAL, Status.UNKNOWN
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROBE_TIMEOUT = 120.0
EXAMPLES = 3  # inaccessible paths named in a finding
# What an AWS SDK (boto3) reads credentials from, besides an instance or container role.
AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


# --- the server's environment and the probe's command line ---------------------------------------


def server_environment(data_directory: str | None) -> dict[str, str] | None:
    """The running postmaster's environment (what archive_command inherits), when it runs on this host
    and we may read it (root, or the server's own user); None otherwise."""
    if not data_directory:
        return None
    try:
        with open(os.path.join(data_directory, "postmaster.pid"), encoding="ascii") as fh:
            pid = int(fh.readline().strip())
        # the pid file may be another host's (a shared mount): the postmaster's cwd is its data directory
        if os.path.realpath(f"/proc/{pid}/cwd") != os.path.realpath(data_directory):
            return None
        with open(f"/proc/{pid}/environ", "rb") as fh:
            raw = fh.read()
    except (OSError, ValueError):
        return None
    env = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep:
            env[os.fsdecode(name)] = os.fsdecode(value)
    return env


def login_environment(account: Account) -> dict[str, str]:
    """A clean environment for account, as a service would start with (used when the server's is unknown)."""
    return {
        "PATH": DEFAULT_PATH,
        "HOME": account.home,
        "USER": account.name,
        "LOGNAME": account.name,
        "LANG": "C.UTF-8",
    }


def probe_argv(archive_command: str | None, config_path: str | None, cluster: str) -> tuple[list[str], dict[str, str]]:
    """The archive_command's opsdb with its global options, asked for `archive-probe` (and the VAR=value
    assignments in front of it); our own opsdb, config and cluster when the command is not opsdb's."""
    if archive_command:
        try:
            words = shlex.split(archive_command)
        except ValueError:
            words = []
        env: dict[str, str] = {}
        while words and "=" in words[0] and not words[0].startswith(("-", "/")):
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        if "wal-push" in words:
            prefix = words[: words.index("wal-push")]
            if prefix and any("opsdb" in os.path.basename(w) for w in prefix):
                return [*prefix, "archive-probe"], env
    argv = list(python_module("opsdb"))  # isolated: an opsdb/ folder in the working directory cannot shadow it
    if config_path:
        argv += ["--config", str(config_path)]
    return [*argv, "--cluster", cluster, "archive-probe"], {}


def parse_probe(stdout: bytes) -> dict[str, Any] | None:
    """The probe's JSON document (its last line), or None."""
    lines = stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        doc = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and "checks" in doc else None


def failure_line(stderr: bytes) -> str:
    lines = [line for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no output"])[-1].strip()


# --- credentials -----------------------------------------------------------------------------------


def credential_sources(env: dict[str, str], home: str | None) -> list[str]:
    """What an AWS SDK would find here, by name only (never a value): env:NAME and file:PATH (readable)."""
    found = [f"env:{name}" for name in AWS_ENV if env.get(name)]
    base = Path(home) / ".aws" if home else None
    for var, default in (("AWS_SHARED_CREDENTIALS_FILE", "credentials"), ("AWS_CONFIG_FILE", "config")):
        path = env.get(var) or (str(base / default) if base else None)
        if path and os.access(path, os.R_OK):
            found.append(f"file:{path}")
    return found


def missing_credentials(mine: list[str], theirs: list[str]) -> list[str]:
    """Sources this process has that the server's environment lacks (files compared by kind)."""

    def kinds(sources: list[str]) -> set[str]:
        return {s if s.startswith("env:") else f"file:{os.path.basename(s[5:])}" for s in sources}

    lacking = kinds(mine) - kinds(theirs)
    return sorted(s.replace("file:", "a readable ~/.aws/") if s.startswith("file:") else s[4:] for s in lacking)


# --- who can use which path ------------------------------------------------------------------------


def groups_of(account: Account) -> set[int]:
    try:
        return set(os.getgrouplist(account.name, account.gid))
    except OSError:
        return {account.gid}


def _allowed(st: os.stat_result, account: Account, groups: set[int], need: int) -> bool:
    """Whether account has `need` (a mask of 4 read, 2 write, 1 execute) on an entry with this stat."""
    if account.uid == 0:
        return True
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == account.uid:
        bits = (mode >> 6) & 7
    elif st.st_gid in groups:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return bits & need == need


def inaccessible(root: str | os.PathLike[str], account: Account, *, limit: int = 200_000) -> tuple[int, list[str]]:
    """Entries under root that account could not use: directories it cannot list, enter and write, files
    it cannot read. Returns (count, a few examples); stops counting after `limit` entries looked at."""
    groups = groups_of(account)
    bad: list[str] = []
    count = 0
    seen = 0
    stack = [os.fspath(root)]
    while stack and seen < limit:
        directory = stack.pop()
        try:
            st = os.stat(directory)
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        except OSError:
            count += 1
            bad.append(directory)
            continue
        if not _allowed(st, account, groups, 7):
            count += 1
            bad.append(directory)
        for entry in entries:
            seen += 1
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False) and not _allowed(entry.stat(), account, groups, 4):
                    count += 1
                    bad.append(entry.path)
            except OSError:
                continue
    return count, sorted(bad)[:EXAMPLES]


def ownership_fix(root: str, account: Account) -> str:
    try:
        group = grp.getgrgid(account.gid).gr_name
    except KeyError:
        group = str(account.gid)
    return f"chown -R {account.name}:{group} {root}"


def spool_status(spool_dir: str, cluster: str, used: bool) -> tuple[Status, str]:
    """Whether this user can use the cluster's spool as the WAL helpers do (creating it 0700 if missing)."""
    import tempfile

    if not used:
        return OK, "not used: [wal] agent, async and prefetch are off"
    path = os.path.join(spool_dir, cluster)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".check-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        from opsdb.ops.common.privileges import current_user

        me = current_user()
        return CRITICAL, (
            f"{path}: {exc.strerror or exc}: the WAL helpers cannot run, so every WAL file is archived in-process "
            f"with a warning in the server log; fix: install -d -o {me} -m 0700 {spool_dir} {path}"
        )
    return OK, f"{path} writable"


# --- the WAL switch --------------------------------------------------------------------------------


def prove_archiving(
    conn: Any,
    archived: Callable[[str], bool],
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Status, str]:
    """Switch WAL and wait until that segment is in the repository (archived(name) says so)."""
    try:
        before = conn.archiver_stats().get("failed_count") or 0
        # a restore point writes a WAL record, so the switch always completes a segment (an idle server too)
        conn.fetchval("SELECT pg_create_restore_point('opsdb check')")
        name = str(conn.fetchval("SELECT pg_walfile_name(pg_switch_wal())"))
    except Exception as exc:
        return CRITICAL, (
            f"cannot switch WAL to prove archiving: {exc}; connect as a superuser, or GRANT EXECUTE ON FUNCTION "
            "pg_switch_wal(), pg_create_restore_point(text) to the check's role"
        )
    started = clock()
    deadline = started + timeout
    delay = 0.1
    while True:
        try:
            if archived(name):
                return OK, f"switched WAL: {name} reached the repository in {clock() - started:.1f} s"
        except Exception as exc:
            return CRITICAL, f"switched WAL to {name} but cannot look it up in the repository: {exc}"
        stats = conn.archiver_stats()
        if (stats.get("failed_count") or 0) > before and stats.get("last_failed_wal") == name:
            return CRITICAL, (
                f"archive_command failed for {name} (pg_stat_archiver); the server log has its message, "
                "and the os_user checks above say what the server's user cannot do"
            )
        if clock() >= deadline:
            return CRITICAL, (
                f"switched WAL, but {name} was not in the repository after {timeout:g} s: archiving is stuck "
                "or slow; see pg_stat_archiver and the server log"
            )
        sleep(delay)
        delay = min(delay * 1.5, 1.0)


# --- the checks ------------------------------------------------------------------------------------


def check_as_server(
    report: Any, settings: Settings, cluster: str, os_user: str, server: dict[str, Any], runner: Any
) -> Account | None:
    """The os_user checks (the probe run as the server's user); returns the account when it is local."""
    from opsdb.ops.common.privileges import account as find_account
    from opsdb.proc import Cmd

    account = find_account(os_user)
    if account is None:
        report.add("os_user", OK, f"not checked here: no user {os_user} on this host (the server runs elsewhere)")
        return None
    me = os.geteuid()
    if me not in (0, account.uid):
        report.add("os_user", UNKNOWN, f"not checked: run check as root or as {account.name} to test archive_command")
        return account
    found = server_environment(server.get("data_directory"))
    where = "the server's environment" if found is not None else "a clean login environment (the server's is unknown)"
    config_path = str(settings.config_path) if settings.config_path is not None else None
    argv, extra = probe_argv(server.get("archive_command"), config_path, cluster)
    env = {**(found if found is not None else login_environment(account)), **extra}
    env.setdefault("PATH", DEFAULT_PATH)
    run_as = account.name if me == 0 and account.uid != 0 else None
    cmd = Cmd(tuple(argv), env=env, inherit_env=False, run_as=run_as, timeout=PROBE_TIMEOUT, cwd="/")
    try:
        result = runner.run(cmd, check=False)
        doc = parse_probe(result.stdout)
        problem = failure_line(result.stderr)
    except Exception as exc:
        doc, problem = None, str(exc)
    shown = " ".join(shlex.quote(a) for a in argv[:-1])
    if doc is None:
        report.add(
            "os_user",
            CRITICAL,
            f"{account.name} cannot run `{shown}` with {where}: {problem}; archive_command fails the same way "
            f"(make opsdb, its config and its key readable by {account.name})",
        )
        return account
    report.add("os_user", OK, f"{account.name} runs opsdb {doc.get('version')} (`{shown}`) with {where}")
    ours = (settings.repository.url, cluster)
    theirs = (doc.get("repository"), doc.get("cluster"))
    for item in doc.get("checks", []):
        status, detail = Status(item["status"]), str(item["detail"])
        if item["name"] == "repository":
            status, detail = _repository_seen(status, detail, ours, theirs, doc, account)
        report.add(f"os_user {item['name']}", status, detail)
    return account


def _repository_seen(
    status: Status, detail: str, ours: tuple[str, str], theirs: tuple[Any, Any], doc: dict[str, Any], account: Account
) -> tuple[Status, str]:
    if theirs != ours:
        return CRITICAL, (
            f"archive_command stores WAL of cluster {theirs[1]} in {theirs[0]}, but this check's config says "
            f"cluster {ours[1]} in {ours[0]}: point both at one config (--config in archive_command)"
        )
    if not ours[0].startswith("s3://"):
        return status, detail
    lacking = missing_credentials(
        credential_sources(dict(os.environ), os.path.expanduser("~")), doc.get("credentials", [])
    )
    if not lacking:
        return status, detail
    note = f"the server's environment lacks {', '.join(lacking)} that this one has"
    if status is OK:
        return OK, f"{detail} ({note}; it found credentials of its own)"
    fix = (
        f"give {account.name} credentials: ~{account.name}/.aws/credentials (mode 0600, owned by {account.name}) "
        "or Environment= in the server's service unit, then restart the server"
    )
    return status, f"{detail}; {note}: {fix}"


def check_ownership(report: Any, settings: Settings, cluster: str, account: Account | None) -> None:
    """A file:// repository and the cluster's spool: every entry the server's user could not use."""
    if account is None or os.geteuid() not in (0, account.uid):
        return
    roots = []
    url = settings.repository.url
    if url.startswith("file://"):
        from urllib.parse import unquote, urlsplit

        roots.append(os.path.normpath(unquote(urlsplit(url).path)))
    roots.append(os.path.join(str(settings.wal.spool_dir), cluster))
    findings = []
    for root in roots:
        if not os.path.exists(root):
            continue
        count, examples = inaccessible(root, account)
        if count:
            findings.append(f"{count} entries under {root} ({', '.join(examples)}): {ownership_fix(root, account)}")
    if findings:
        report.add(
            "ownership",
            CRITICAL,
            f"{account.name} cannot use " + "; ".join(findings) + " (written before opsdb handed files to os_user?)",
        )
    else:
        report.add("ownership", OK, f"{account.name} can use every entry of " + " and ".join(roots))


def check_archiving(
    report: Any,
    cluster_cfg: ClusterConfig,
    server: dict[str, Any],
    connect: Any,
    archived: Callable[[str], bool],
    switch_wal: bool = True,
    **waits: Any,
) -> None:
    mode, standby = server.get("archive_mode"), server.get("standby")
    if not switch_wal:
        report.add("archiving", OK, "not tested (--no-switch): pg_stat_archiver's last result is under archiver")
    elif not server:
        report.add("archiving", UNKNOWN, "not tested: server unreachable")
    elif mode not in ("on", "always"):
        report.add("archiving", UNKNOWN, "not tested: archive_mode is off")
    elif standby:
        report.add("archiving", OK, "not tested on a standby: pg_switch_wal runs on the primary")
    else:
        timeout = cluster_cfg.archive_wait.total_seconds()
        try:
            with connect(cluster_cfg.conninfo, timeout=10, application_name="opsdb check") as c:
                status, detail = prove_archiving(c, archived, timeout, **waits)
        except Exception as exc:
            status, detail = CRITICAL, f"cannot test archiving: {exc}"
        report.add("archiving", status, detail)
