"""The paths bench/peers.py measures, each for opsdb and pgBackRest in the same round.

Every function returns samples: {"path", "kind", "tool", "round", "value", "unit", ...}; `value` is
what the ratio is taken of (MB/s, segments/s, or ms for a single call). Within a round the two tools
run back to back and the order flips every round, so neither always runs on a warmer cache.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from backup import dir_size, measure
from peer_setup import BUCKET, Tools, stop_helper
from wal import Server, as_pg, chown, drain, free_port, replay, sh

TOOLS = ("opsdb", "pgbackrest")
Sample = dict[str, Any]


def order(round_no: int) -> tuple[str, ...]:
    return TOOLS if round_no % 2 == 0 else TOOLS[::-1]


def short(tool: str) -> str:
    return "o" if tool == "opsdb" else "p"


def config(tools: Tools, tool: str, name: str, kind: str, **kw: Any) -> Path:
    """`name` becomes unique per tool (o-NAME / p-NAME): repositories and spools never collide."""
    if tool == "opsdb":
        if "repo_name" in kw and kw["repo_name"]:
            kw["repo_name"] = f"o-{kw['repo_name']}"
        return tools.opsdb_config(f"o-{name}", kind, **kw)
    if "repo_name" in kw and kw["repo_name"]:
        kw["repo_name"] = f"p-{kw['repo_name']}"
    return tools.pgbr_config(f"p-{name}", kind, **kw)


def backups(tools: Tools, server: Server, kind: str, rounds: int, size: int, configs: dict[str, Path]) -> list[Sample]:
    """Full backups into each tool's main repository of `kind`; MB/s = database size / wall. While a
    tool backs up, archive_command is that tool's push into the same repository (pgBackRest's backup
    waits until its last segment is archived there; opsdb's carries its WAL in the backup), set once
    the archiver has nothing left from the round before."""
    samples = []
    for r in range(rounds):
        for tool in order(r):
            archive_with(server, tools.push(tool, configs[tool]))
            row = measure(f"{tool} backup", tools.backup(tool, configs[tool]), size=size, cwd="/tmp")
            samples.append(
                {"path": "backup", "kind": kind, "tool": tool, "round": r, "value": row["mb_s"], "unit": "MB/s", **row}
            )
    return samples


def archive_with(server: Server, command: str) -> None:
    """Set archive_command once no segment waits for the previous one (bounded: 120 s)."""
    status = server.data / "pg_wal" / "archive_status"
    deadline = time.monotonic() + 120
    while list(status.glob("*.ready")) and time.monotonic() < deadline:
        time.sleep(0.1)
    server.sql(f"ALTER SYSTEM SET archive_command = '{command}'")
    server.sql("SELECT pg_reload_conf()")


def restores(tools: Tools, kind: str, rounds: int, configs: dict[str, Path]) -> list[Sample]:
    """The newest backup of each tool into an empty directory, synced by both (MB/s = restored size / wall)."""
    samples = []
    for r in range(rounds):
        for tool in order(r):
            target = tools.work / f"restored-{tool}-{kind}"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(mode=0o700)
            chown(target)
            row = measure(f"{tool} restore", tools.restore(tool, configs[tool], target), size=0, cwd="/tmp")
            row["mb_s"] = round(dir_size(target) / row["wall_s"] / 1e6, 1)
            shutil.rmtree(target)
            samples.append(
                {"path": "restore", "kind": kind, "tool": tool, "round": r, "value": row["mb_s"], "unit": "MB/s", **row}
            )
    return samples


def drains(
    tools: Tools, server: Server, burst: list[str], kind: str, rounds: int, local: Path, *, with_cp: bool
) -> list[Sample]:
    """PostgreSQL's archiver works off the whole burst, backlogged as .ready, per tool and mode, each
    into a fresh repository; `cp` + `sync` into `local` (with_cp) is the local reference."""
    samples = []
    for r in range(rounds):
        commands = {("cp", "sync"): f"test ! -f {local}/%f && cp %p {local}/%f && sync {local}/%f"} if with_cp else {}
        for mode in ("sync", "async"):
            for tool in order(r):
                extra = (
                    ({"wal": "async = true\n"} if tool == "opsdb" else {"extra": "archive-async=y\n"})
                    if mode == "async"
                    else {}
                )
                cfg = config(tools, tool, f"{mode}-{kind}-r{r}", kind, **extra)
                commands[(tool, mode)] = tools.push(tool, cfg)
        for (tool, mode), command in commands.items():
            if tool == "cp":
                shutil.rmtree(local, ignore_errors=True)
                local.mkdir()
                chown(local)
            missing = [n for n in burst if not (server.data / "pg_wal" / n).exists()]
            if missing:
                raise SystemExit(
                    f"{len(missing)} burst segments were recycled (first {missing[0]}): drains would be short"
                )
            seconds = drain(server, burst, command)
            samples.append(
                {
                    "path": f"drain-{mode}",
                    "kind": "local" if tool == "cp" else kind,
                    "tool": tool,
                    "round": r,
                    "value": round(len(burst) / seconds, 2),
                    "unit": "segments/s",
                    "wall_s": round(seconds, 2),
                    "command": command,
                }
            )
    return samples


def calls(tools: Tools, server: Server, segments: list[Path], kind: str, count: int) -> list[Sample]:
    """One archive_command call on one 16 MiB segment, run from the data directory as PostgreSQL
    does (through runuser, which both pay): pgBackRest archive-push; opsdb wal-push with its helper
    already running; opsdb's first call after its helper went idle, which starts a helper (the same
    config and repository each time, its helper stopped before the call as the idle exit stops it);
    and the interpreter's own start (`python -I -c pass` of opsdb's install), the floor of any call."""
    probe = tools.work / f"probe-{kind}"
    (probe / "pg_wal").mkdir(parents=True, exist_ok=True)
    for seg in segments:
        shutil.copy(seg, probe / "pg_wal" / seg.name)
    chown(probe)
    warm = {tool: config(tools, tool, f"call-{kind}", kind) for tool in TOOLS}
    cold = config(tools, "opsdb", f"first-{kind}", kind)
    last = str(probe / "pg_wal" / segments[-1].name)
    for cfg in (warm["opsdb"], cold):  # untimed: the helpers' first start (the config validated once)
        sh(as_pg(tools.push("opsdb", cfg).replace("%p", last).split()), cwd=server.data)
    python = str(tools.opsdb.with_name("python3"))
    times: dict[str, list[float]] = {"pgbackrest": [], "opsdb": [], "opsdb-first": [], "python-floor": []}
    for i, seg in enumerate(segments[:count]):
        path = str(probe / "pg_wal" / seg.name)
        variants = {
            "pgbackrest": as_pg(tools.push("pgbackrest", warm["pgbackrest"]).replace("%p", path).split()),
            "opsdb": as_pg(tools.push("opsdb", warm["opsdb"]).replace("%p", path).split()),
            "opsdb-first": as_pg(tools.push("opsdb", cold).replace("%p", path).split()),
            "python-floor": as_pg([python, "-I", "-c", "pass"]),
        }
        for name in variants if i % 2 == 0 else dict(reversed(list(variants.items()))):
            if name == "opsdb-first":
                stop_helper(tools.work / f"spool-opsdb-{cold.stem.removeprefix('opsdb-')}")
            start = time.monotonic()
            sh(variants[name], cwd=server.data)
            times[name].append((time.monotonic() - start) * 1000)
    times.update(async_calls(tools, server, segments, kind, count))
    samples = []
    for name, values in times.items():
        if name.endswith("-async") or name == "python-floor":
            samples.append(
                {
                    "path": "call-floor" if name == "python-floor" else "call-async",
                    "kind": kind,
                    "tool": "opsdb-only",
                    "round": 0,
                    "value": round(statistics.median(values), 1),
                    "unit": "ms",
                    "samples_ms": [round(v, 1) for v in values],
                }
            )
            continue
        tool = "pgbackrest" if name == "pgbackrest" else "opsdb"
        path = "call-first" if name == "opsdb-first" else "call"
        rows = [(path, tool)] + ([("call-first", "pgbackrest")] if name == "pgbackrest" else [])
        for p, t in rows:  # pgBackRest has no helper: each of its calls is also its "first" call
            samples.append(
                {
                    "path": p,
                    "kind": kind,
                    "tool": t,
                    "round": 0,
                    "value": round(statistics.median(values), 1),
                    "unit": "ms",
                    "samples_ms": [round(v, 1) for v in values],
                }
            )
    return samples


def async_calls(tools: Tools, server: Server, segments: list[Path], kind: str, count: int) -> dict[str, list[float]]:
    """One async archive_command call for a segment opsdb's helper already stored ahead ([wal] async):
    `count` segments marked .ready, one untimed call starts the helper, which pushes them, and once
    every segment is stored each is called for. opsdb only: pgBackRest's async archive-push refuses
    WAL outside its pg1-path (exit 25), and this probe directory is not the server's."""
    times: dict[str, list[float]] = {}
    for tool in ("opsdb",):
        probe = tools.work / f"probe-async-{tool}-{kind}"
        status = probe / "pg_wal" / "archive_status"
        status.mkdir(parents=True, exist_ok=True)
        for seg in segments[: count + 1]:
            shutil.copy(seg, probe / "pg_wal" / seg.name)
            (status / f"{seg.name}.ready").touch()
        chown(probe)
        extra = {"wal": "async = true\npush_workers = 4\n"} if tool == "opsdb" else {"extra": "archive-async=y\n"}
        cfg = config(tools, tool, f"call-async-{kind}", kind, **extra)
        command = tools.push(tool, cfg)

        def call(seg: Path, command: str = command, probe: Path = probe, status: Path = status) -> float:
            start = time.monotonic()
            sh(as_pg(command.replace("%p", str(probe / "pg_wal" / seg.name)).split()), cwd=server.data)
            elapsed = (time.monotonic() - start) * 1000
            (status / f"{seg.name}.ready").rename(status / f"{seg.name}.done")  # as PostgreSQL does
            return elapsed

        call(segments[count])  # untimed: starts the helper / async process, which pushes the .ready ones
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not all(
            _stored_ahead(tools, tool, cfg, kind, s.name) for s in segments[:count]
        ):
            time.sleep(0.05)
        _wait_idle(tools.work / f"spool-opsdb-{cfg.stem.removeprefix('opsdb-')}")
        times[f"{tool}-async"] = [call(seg) for seg in segments[:count]]
    return times


def _wait_idle(spool: Path, timeout: float = 60.0) -> None:
    """Until the helper serving under `spool` used no CPU for 0.3 s: an object is visible in the store
    before the helper's push returns (a guarded create-only write reads its object back after
    publishing it), and a call made meanwhile measures the helper's work ahead, not the call."""
    stats = [Path(f"/proc/{lock.read_text().strip()}/stat") for lock in spool.glob("**/helper/*.lock")]
    deadline, last, still = time.monotonic() + timeout, -1, 0
    while time.monotonic() < deadline and still < 3:
        try:
            used = sum(sum(int(v) for v in p.read_text().rsplit(")", 1)[1].split()[11:13]) for p in stats)
        except (OSError, ValueError):
            return  # the helper is gone: nothing runs ahead
        still = still + 1 if used == last else 0
        last = used
        time.sleep(0.1)


def _stored_ahead(tools: Tools, tool: str, cfg: Path, kind: str, name: str) -> bool:
    if tool == "pgbackrest":  # its async process acknowledges through its spool
        return (
            tools.work / f"pgbr-spool-{cfg.stem.removeprefix('pgbr-')}" / "archive" / "main" / "out" / f"{name}.ok"
        ).exists()
    where = cfg.stem.removeprefix("opsdb-")
    key = f"{where}/clusters/main/wal/{name[:16]}/{name}"
    if kind == "s3":
        import boto3

        try:
            boto3.client("s3", endpoint_url=tools.endpoint.url, region_name="us-east-1").head_object(
                Bucket=BUCKET, Key=key
            )
            return True
        except Exception:  # not there yet
            return False
    return (tools.work / f"repo-{key}").exists()


def replays(
    tools: Tools, base: Path, burst: list[str], kind: str, rounds: int, local: Path, drain_round: int, prefetch: int
) -> list[Sample]:
    """PITR replay of the burst from a base backup taken just before it, until promoted:
    `cp` from the local directory; pgBackRest archive-get with archive-async (its prefetch,
    queue of `prefetch` segments); opsdb wal-fetch with [wal] prefetch. Each reads the repository
    its async drain of round `drain_round` filled."""
    samples = []
    queue = f"archive-async=y\narchive-get-queue-max={prefetch * 16}MiB\n"
    for r in range(rounds):
        for tool in ("cp", *order(r)):
            name = f"{tool}-{kind}-r{r}"
            data = tools.work / f"replay-{name}"
            if tool == "cp":
                command = f"cp {local}/%f %p"
            else:
                extra = {"wal": f"prefetch = {prefetch}\n"} if tool == "opsdb" else {"extra": queue}
                cfg = config(
                    tools, tool, f"replay-{kind}-r{r}", kind, repo_name=f"async-{kind}-r{drain_round}", **extra
                )
                command = tools.fetch(tool, cfg, data)
            seconds = replay(tools.work, base, name, command, free_port())
            samples.append(
                {
                    "path": "replay",
                    "kind": kind,
                    "tool": tool,
                    "round": r,
                    "value": round(len(burst) / seconds, 2),
                    "unit": "segments/s",
                    "wall_s": round(seconds, 2),
                    "command": command,
                }
            )
    return samples


def load() -> float:
    return round(os.getloadavg()[0], 2)
