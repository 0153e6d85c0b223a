"""From validated settings to one drill / verify / report call: the CLI's single entry points.

Builds the real dependencies (storage, keys, codec, runner, scratch provider, restorer) from
config.Settings, runs the use case, renders and stores the report.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsdb.errors import UsageError
from opsdb.model.report import DrillReport, HistoryRow, history_stats
from opsdb.ops.proof.drill import DrillRequest, run_drill
from opsdb.ops.proof.drill_checks import Assertion
from opsdb.ops.proof.drill_restore import RepositoryRestorer
from opsdb.ops.proof.scratch import DockerScratch, LocalScratch, ScratchProvider
from opsdb.ops.proof.verify import VerifyResult, verify_repository
from opsdb.ops.recovery.pitr import opsdb_executable, restore_command
from opsdb.ops.recovery.replay_progress import OnReplay
from opsdb.ops.wal.push_fetch import wal_repo_from_settings
from opsdb.pg.tools import find_bin_dir
from opsdb.proc import Cmd, LocalRunner, Runner
from opsdb.render.report import render_html, render_markdown
from opsdb.repo import catalog, reports
from opsdb.repo.envelope import Codec
from opsdb.storage.base import Storage

if TYPE_CHECKING:
    from opsdb.config import Settings


def load_catalog(storage: Storage, cluster: str, keys: Mapping[str, Any]) -> list[Any]:
    """The committed backups and dumps (an unreadable entry is skipped here; verify names it)."""
    return list(catalog.list_backups(storage, cluster, keys, skip_unreadable=True))


def verify_from_settings(
    settings: Settings, cluster: str, backup_id: str | None = None, on_bytes: Callable[[int], None] | None = None
) -> VerifyResult:
    repo = wal_repo_from_settings(settings, cluster)
    backups = load_catalog(repo.storage, cluster, repo.keys)
    return verify_repository(repo.storage, cluster, repo.keys, backups, backup_id=backup_id, on_bytes=on_bytes)


def _wal_fetch_command(settings: Settings, cluster: str, os_user: str | None, runner: Runner) -> str:
    """`opsdb --config C wal-fetch %f %p` when the scratch server's user can run opsdb; else "" (the
    drill then stages the WAL it needs and replays from there)."""
    exe = opsdb_executable()  # the same choice `opsdb restore` makes ($OPSDB_EXECUTABLE honoured)
    if not os.path.exists(exe) or settings.config_path is None:
        return ""
    run_as = os_user if os.geteuid() == 0 else None
    # first: can the server's user run opsdb at all (runuser's own failure also exits 1)
    version = runner.run(Cmd((exe, "--version"), run_as=run_as, timeout=60), check=False)
    if version.returncode != 0:
        return ""
    # then probe exactly what recovery will do, as that user: load the config, open the repository and
    # the key, and look up a file that never exists ("not archived" = exit 1 means all of that works)
    # (the destination must be writable by that user: wal-fetch checks it before looking the file up)
    dest = os.path.join(tempfile.gettempdir(), f"opsdb-wal-probe-{os.getpid()}")
    argv = (exe, "--config", str(settings.config_path), "--cluster", cluster, "wal-fetch", "00000000.history", dest)
    probe = runner.run(Cmd(argv, run_as=run_as, timeout=60), check=False)
    if probe.returncode != 1:
        return ""
    return restore_command(exe, str(settings.config_path), cluster)


def scratch_provider(
    settings: Settings, provider: str, bin_dir: Path, os_user: str, major: int, runner: Runner
) -> ScratchProvider:
    drill = settings.drill
    if provider == "docker":
        return DockerScratch(drill.docker_image.format(major=major), drill.scratch_dir)
    if provider != "local":
        raise UsageError(f"unknown drill provider {provider!r}: use local or docker")
    return LocalScratch(bin_dir, os_user, runner, drill.scratch_dir)


def drill_from_settings(
    settings: Settings,
    cluster: str,
    *,
    to_time: datetime | None = None,
    random_target: bool = False,
    provider: str | None = None,
    report_dir: str | None = None,
    keep: bool = False,
    on_bytes: Callable[[int], None] = lambda n: None,
    on_replay: OnReplay | None = None,
) -> tuple[DrillReport, list[str]]:
    """Run one drill for a configured cluster; store the report in the repository and report_dir."""
    if to_time is not None and random_target:
        raise UsageError("give --to-time or --random, not both")
    from opsdb.ops.recovery.timelines import live_timeline

    cfg = settings.clusters[cluster]
    repo = wal_repo_from_settings(settings, cluster, writable=True)  # the drill stores its report
    runner = LocalRunner()
    bin_dir = find_bin_dir(cfg.pg_bin_dir)
    major = _major(bin_dir)
    kind = "random" if random_target else ("time" if to_time is not None else "latest")
    request = DrillRequest(
        cluster=cluster,
        target_kind=kind,
        to_time=to_time,
        keep=keep,
        heartbeat_schema=cfg.heartbeat_schema,
        assertions=tuple(Assertion(a.name or a.sql, a.database, a.sql, a.expect) for a in settings.drill.assertions),
        largest_tables=settings.drill.largest_tables,
        primary_conninfo=cfg.conninfo,
        restore_command=_wal_fetch_command(settings, cluster, cfg.os_user, runner),
        timeout=settings.drill.timeout.total_seconds(),
        os_user=cfg.os_user if os.geteuid() == 0 else None,
        live_timeline=live_timeline(cfg.conninfo),
    )
    restorer = RepositoryRestorer(
        repo.storage,
        cluster,
        repo.keys,
        lambda: load_catalog(repo.storage, cluster, repo.keys),
        request.os_user,
        bin_dir,
    )
    scratch = scratch_provider(settings, provider or settings.drill.provider, bin_dir, cfg.os_user, major, runner)
    report = run_drill(
        request,
        storage=repo.storage,
        keys=repo.keys,
        restorer=restorer,
        scratch=scratch,
        bin_dir=bin_dir,
        runner=runner,
        on_bytes=on_bytes,
        on_replay=on_replay,
    )
    return report, save_report(repo.storage, cluster, report, repo.codec, report_dir)


def save_report(storage: Storage, cluster: str, report: DrillReport, codec: Codec, report_dir: str | None) -> list[str]:
    """Keep the report in the repository (create-only) and, when asked, as files in report_dir."""
    rendered = {"md": render_markdown(report).encode(), "html": render_html(report).encode()}
    reports.store_report(storage, cluster, report, rendered, codec)
    files: list[str] = []
    if report_dir:
        out = Path(report_dir)
        out.mkdir(parents=True, exist_ok=True)
        for ext, data in [("json", report.to_json().encode()), *rendered.items()]:
            path = out / f"{report.id}.{ext}"
            path.write_bytes(data)
            files.append(str(path))
    return files


@dataclasses.dataclass(frozen=True)
class History:
    rows: list[HistoryRow]
    stats: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"reports": [r.to_dict() for r in self.rows], "summary": self.stats}


def report_history(settings: Settings, cluster: str, limit: int = 20) -> History:
    repo = wal_repo_from_settings(settings, cluster)
    rows = [HistoryRow.of(r) for r in reports.recent_reports(repo.storage, cluster, repo.keys, limit=limit)]
    return History(rows, history_stats(rows))


def report_show(settings: Settings, cluster: str, report_id: str, fmt: str) -> str:
    repo = wal_repo_from_settings(settings, cluster)
    if fmt == "json":
        return reports.load_report(repo.storage, cluster, report_id, repo.keys).to_json()
    return reports.load_rendered(repo.storage, cluster, report_id, fmt, repo.keys).decode("utf-8")


def _major(bin_dir: Path) -> int:
    """The server major version of bin_dir (…/postgresql/15/bin -> 15), for the docker image tag."""
    for part in reversed(bin_dir.parts):
        if part.isdigit():
            return int(part)
    return 16
