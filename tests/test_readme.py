"""Slow: the README's first quick-start command, run verbatim, renders a service that serves.

The command ends in `uv run python -m app`, which serves until stopped, so the test starts it in
its own process group, waits for both probes to answer 200 on SQLite, then sends SIGINT to the
whole group, as Ctrl-C does to a terminal's foreground group, and waits until no member is left.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, project_env
from tests.server import PROBES, free_port, wait_for_ok

pytestmark = pytest.mark.slow

QUICK_START = re.compile(
    r"\*\*1\. Render a service and start it\*\*.*?```bash\n(.+?)\n```", re.DOTALL
)
GROUP_EXIT_SECONDS = 30


def quick_start_command() -> str:
    """Return the README's render-and-start command, exactly as a reader would paste it."""
    match = QUICK_START.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert match is not None, "README.md lost its '1. Render a service and start it' block"
    return match.group(1)


def group_alive(shell: subprocess.Popen[bytes]) -> bool:
    """Tell whether any process of the shell's group still exists (the shell itself reaped)."""
    shell.poll()
    try:
        os.killpg(shell.pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_readme_render_command_serves_probes_on_sqlite(tmp_path: Path) -> None:
    """Render with the README's command, then `/livez` and `/readyz` answer 200 on SQLite."""
    command = quick_start_command()
    port = free_port()
    # TMPDIR moves the render into this test's folder; APP_PORT keeps parallel runs apart.
    env = project_env(TMPDIR=str(tmp_path), APP_PORT=str(port), APP_SERVER__DRAIN_DELAY="0")
    log = tmp_path / "readme-command.log"

    with log.open("wb") as sink:
        shell = subprocess.Popen(
            ["bash", "-c", command],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            statuses = {p: wait_for_ok(f"http://127.0.0.1:{port}{p}", shell) for p in PROBES}
            os.killpg(shell.pid, signal.SIGINT)
            deadline = time.monotonic() + GROUP_EXIT_SECONDS
            while group_alive(shell) and time.monotonic() < deadline:
                time.sleep(0.1)
            left_running = group_alive(shell)
        finally:
            if group_alive(shell):
                os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
    output = log.read_text(errors="replace")

    assert {"/livez": 200, "/readyz": 200} == statuses, output
    assert not left_running, output
    assert "Traceback" not in output, output
    assert (tmp_path / "keel-demo" / "uv.lock").is_file()
    assert (tmp_path / "keel-demo" / ".copier-answers.yml").is_file()
