"""The README's commands as a reliable gate: apt waits for a held lock (bounded), installs leave no system
service enabled, and the package metadata builds without setuptools deprecation warnings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.gate import GATE, missing

ROOT = Path(__file__).resolve().parents[2]
APT_SH = ROOT / "scripts" / "apt.sh"


def _fake_apt(tmp_path: Path, failures: int, message: str) -> dict[str, str]:
    """An apt-get on PATH that fails `failures` times with `message` (exit 100), then succeeds."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    counter = tmp_path / "calls"
    (bindir / "apt-get").write_text(
        "#!/bin/sh\n"
        f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {counter}\n"
        f'if [ $n -le {failures} ]; then echo "E: {message}" >&2; exit 100; fi\n'
        "exit 0\n"
    )
    (bindir / "apt-get").chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "APT_LOCK_SLEEP": "0", "APT_LOCK_TRIES": "5"}


def _apt_get(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f". {APT_SH} && apt_get update"], capture_output=True, text=True, env=env, timeout=60
    )


LOCK = "Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (apt-get)"


def test_apt_get_waits_while_another_apt_holds_the_lock(tmp_path):
    result = _apt_get(_fake_apt(tmp_path, 3, LOCK))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("holds the lock; waiting") == 3
    assert (tmp_path / "calls").read_text().strip() == "4"


def test_apt_get_gives_up_after_a_bounded_wait(tmp_path):
    result = _apt_get(_fake_apt(tmp_path, 100, LOCK))
    assert result.returncode == 1
    assert "giving up" in result.stderr and (tmp_path / "calls").read_text().strip() == "5"


def test_apt_get_does_not_retry_other_failures(tmp_path):
    result = _apt_get(_fake_apt(tmp_path, 100, "Unable to locate package nosuch"))
    assert result.returncode == 1
    assert "Unable to locate package nosuch" in result.stderr and (tmp_path / "calls").read_text().strip() == "1"


@pytest.mark.skipif(not GATE, reason="checks what scripts/test.sh set up")
def test_no_system_pgbouncer_service_is_left_enabled():
    if (
        shutil.which("dpkg-query") is None
        or subprocess.run(["dpkg-query", "-W", "pgbouncer"], capture_output=True).returncode
    ):
        missing("pgbouncer is not installed as a Debian package here")
    if shutil.which("systemctl"):
        state = subprocess.run(["systemctl", "is-enabled", "pgbouncer"], capture_output=True, text=True).stdout.strip()
        assert state != "enabled"
    started = [p for p in Path("/etc").glob("rc[2-5].d/S*pgbouncer")]
    assert started == []


def test_the_package_metadata_builds_without_deprecation_warnings(tmp_path):
    """pip builds the metadata in an isolated env with a current setuptools (pyproject: setuptools>=77)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-deps",
            "--quiet",
            "--report",
            str(tmp_path / "r"),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Deprecat" not in result.stderr and "deprecated" not in result.stderr, result.stderr[-3000:]


def _locked(lock: Path) -> dict[str, str]:
    """name -> version of every `name==version \\` line of a lock made by scripts/lock.sh."""
    pins = {}
    for line in lock.read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, version = line.split(" ")[0].split("==")
            pins[canonicalize_name(name.split("[")[0])] = version
    return pins


@pytest.mark.parametrize(("lock", "extras"), [("runtime.lock", ()), ("dev.lock", ("dev", "docker"))])
def test_the_locks_pin_every_dependency_of_pyproject_within_its_bounds(lock, extras):
    """A dependency changed in pyproject.toml without `./scripts/lock.sh` fails here, not on a fresh machine."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for extra in extras for r in project["optional-dependencies"][extra]]
    pins = _locked(ROOT / "requirements" / lock)
    for req in wanted:
        if req.name == "opsdb":
            continue  # the dev extra names the docker extra
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements/{lock}: run ./scripts/lock.sh"
        assert req.specifier.contains(pins[name]), f"requirements/{lock} pins {name}=={pins[name]}, not {req}"
    lines = (ROOT / "requirements" / lock).read_text().splitlines()
    hashed = [i for i, line in enumerate(lines) if "==" in line and not line.startswith((" ", "#"))]
    assert all(lines[i].endswith("\\") and "--hash=sha256:" in lines[i + 1] for i in hashed)
