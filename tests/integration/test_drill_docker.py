"""The docker scratch provider: the official postgres image with the restored directory mounted.

Runs only where a Docker engine answers; reported as skipped otherwise."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from opsdb.ops.proof.drill import DrillRequest, run_drill
from opsdb.ops.proof.drill_restore import RepositoryRestorer
from opsdb.ops.proof.scratch import DockerScratch
from opsdb.proc import LocalRunner
from tests.integration.drill_env import KEYS
from tests.integration.test_drill import env  # noqa: F401  (the module fixture: primary, backup, heartbeats)

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def docker_available() -> bool:
    """True when a Docker engine answers (the one skip the test gate keeps: no engine runs on CI's machines)."""
    try:
        import docker  # type: ignore[import-untyped]  # docker-py ships no type information

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.mark.skipif(not docker_available(), reason="no Docker engine answers here")
def test_docker_drill_between_two_heartbeats(env: Any) -> None:  # noqa: F811
    h1, h2, h3 = env["beats"]
    restorer = RepositoryRestorer(env["local"], "main", KEYS, lambda: [env["backup"]])
    request = DrillRequest(
        cluster="main",
        target_kind="time",
        to_time=h2.time + timedelta(milliseconds=500),
        primary_conninfo=env["primary"].conninfo,
        timeout=300,
    )
    report = run_drill(
        request,
        storage=env["local"],
        keys=KEYS,
        restorer=restorer,
        scratch=DockerScratch("postgres:15"),
        bin_dir=env["bin_dir"],
        runner=LocalRunner(),
    )
    assert report.passed, report.failed_checks
    assert report.recovered_time == h2.time and report.environment["provider"] == "docker"
