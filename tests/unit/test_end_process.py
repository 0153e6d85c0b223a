"""fastpath.end_process: the console script ends without interpreter teardown, losing nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_buffered_output_and_the_exit_status_survive() -> None:
    # stdout is a pipe here, so block-buffered: os._exit without the flush would lose this line
    done = run(
        "import logging, sys\n"
        "from opsdb.cli.fastpath import end_process\n"
        "logging.basicConfig(stream=sys.stderr)\n"
        "print('x' * 10000)\n"
        "logging.getLogger('t').warning('logged')\n"
        "end_process(3)\n"
        "print('not reached')\n"
    )
    assert done.returncode == 3
    assert done.stdout == "x" * 10000 + "\n"
    assert "logged" in done.stderr


def test_status_forms_as_python_exits_with_them() -> None:
    assert run("from opsdb.cli.fastpath import end_process; end_process(None)").returncode == 0
    message = run("from opsdb.cli.fastpath import end_process; end_process('bad thing')")
    assert message.returncode == 1 and message.stderr == "bad thing\n"
    assert run("from opsdb.cli.fastpath import end_process; end_process(256 + 7)").returncode == 7


def test_a_running_non_daemon_thread_is_waited_for_by_a_normal_exit(tmp_path: Path) -> None:
    marker = tmp_path / "finished"
    done = run(
        "import sys, threading, time\n"
        "from opsdb.cli.fastpath import end_process\n"
        f"def work():\n    time.sleep(0.3)\n    open({str(marker)!r}, 'w').write('yes')\n"
        "threading.Thread(target=work).start()\n"
        "end_process(4)\n"
        "sys.exit(4)  # end_process returned: the normal exit waits for the thread\n"
    )
    assert done.returncode == 4
    assert marker.read_text() == "yes"
