"""Render the working tree, build the image's venv the Dockerfile way, and run processes."""

from __future__ import annotations

import contextlib
import http.client
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.dockerfile import parse_dockerfile, runtime_contract
from tests.helpers import project_env

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATHS = ("copier.yml", "template")
PROJECT_NAME = "Bench Svc"


def clean_env(**extra: str) -> dict[str, str]:
    """Return `tests.helpers.project_env`, with the outer venv's bin taken off PATH too."""
    env = project_env(**extra)
    outer = os.environ.get("VIRTUAL_ENV")
    if outer and "PATH" not in extra:  # `uv run` put the repo's own venv first on PATH
        bin_dir = str(Path(outer) / "bin")
        env["PATH"] = os.pathsep.join(
            p for p in env.get("PATH", "").split(os.pathsep) if p != bin_dir
        )
    return env


def run(command: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    """Run a command to completion; raise with its output when it fails."""
    done = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(
            f"`{shlex.join(command)}` exited {done.returncode} in {cwd}\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def git(cwd: Path, *args: str) -> str:
    """Run git with a throw-away identity."""
    identity = ["-c", "user.name=keel bench", "-c", "user.email=bench@keel.invalid"]
    return run(["git", *identity, "-c", "commit.gpgsign=false", *args], cwd=cwd, env=clean_env())


def template_snapshot(dst: Path, ref: str | None = None) -> tuple[Path, str]:
    """Copy the template into a fresh git repo at ``dst``: the working tree, or commit ``ref``.

    Returns:
        The repo (an absolute path copier can render from) and the source commit, with
        ``+dirty`` when the working tree was used and differs from it.
    """
    if ref is not None:
        dst.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", "--format=tar", ref, "--", *TEMPLATE_PATHS],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(dst)], input=archive.stdout, check=True)
    else:
        listed = git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--")
        names = [n for n in listed.split("\0") if n and n.split("/", 1)[0] in TEMPLATE_PATHS]
        for name in sorted(set(names)):
            if (ROOT / name).is_file():
                (dst / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, dst / name)
    git(dst, "init", "--quiet")
    git(dst, "add", "--all")
    git(dst, "commit", "--quiet", "--message", "template under benchmark")
    commit = git(ROOT, "rev-parse", "--short=12", ref or "HEAD").strip()
    dirty = ref is None and git(ROOT, "status", "--porcelain", "--", *TEMPLATE_PATHS).strip()
    return dst, commit + ("+dirty" if dirty else "")


def render_command(template: Path, dst: Path) -> list[str]:
    """Return the `copier copy` a user runs, from the repo's dev environment."""
    return [
        sys.executable,
        "-m",
        "copier",
        "copy",
        "--quiet",
        "--defaults",
        "--vcs-ref=HEAD",
        f"--data=project_name={PROJECT_NAME}",
        str(template),
        str(dst),
    ]


@dataclass(frozen=True)
class Runtime:
    """The image stand-in: its venv, the runtime stage's environment, workdir and CMD."""

    venv: Path
    argv: list[str]
    env: dict[str, str]
    workdir: Path

    @property
    def python(self) -> Path:
        """Return the venv's interpreter."""
        return self.venv / "bin" / "python"


def build_runtime(project: Path, root: Path) -> Runtime:
    """Build the venv with the builder stage's last ``uv sync`` and its uv settings.

    The builder's RUN steps after that sync (stripping the extension modules) run next, on
    the same venv. The runtime stage's ENV is applied with its venv path moved to
    ``root/venv``; its CMD is returned unchanged.
    """
    contract = runtime_contract(parse_dockerfile(project / "Dockerfile"))
    venv = root / "venv"
    build_env = clean_env(**contract.build_env, UV_PROJECT_ENVIRONMENT=str(venv))
    run(contract.sync_argv, cwd=project, env=build_env)
    for argv in contract.finish_argvs(venv):
        run(argv, cwd=project, env=build_env)
    workdir = root / "workdir"
    workdir.mkdir()
    return Runtime(venv, contract.argv, contract.env_for(venv, clean_env()), workdir)


def tree_bytes(path: Path) -> int:
    """Return the apparent size of every regular file under ``path`` (symlinks not followed)."""
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes] | None:
    """GET ``path`` on the loopback port; None while nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    except OSError:
        return None
    finally:
        connection.close()


def cpu_times(pid: int) -> tuple[float, float]:
    """Return the user and the system CPU time, in seconds, a process has used so far.

    Both count all of the process's threads.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5) (utime, stime), counted after the ")" that ends the name.
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def rss_mb(pid: int) -> float:
    """Return the resident set size of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Process:
    """A server process pinned to one CPU, its output kept in a log file."""

    def __init__(
        self, argv: list[str], *, env: dict[str, str], cwd: Path, log: Path, cpu: int | None
    ) -> None:
        pinned = ["taskset", "--cpu-list", str(cpu), *argv] if cpu is not None else argv
        self.log = log
        self._sink = log.open("wb")
        self.started = time.perf_counter()
        # taskset execs the command, so this pid is the server's own.
        self.popen = subprocess.Popen(
            pinned,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """Return the server's pid."""
        return self.popen.pid

    def wait_ok(self, port: int, path: str, *, budget: float = 60.0, poll: float = 0.005) -> float:
        """Poll until ``path`` answers 200; return seconds since the exec.

        Raises:
            RuntimeError: The process exited or the budget ran out first.
        """
        deadline = time.perf_counter() + budget
        while time.perf_counter() < deadline:
            if self.popen.poll() is not None:
                break
            answer = get(port, path, timeout=1.0)
            if answer is not None and answer[0] == 200:
                return time.perf_counter() - self.started
            time.sleep(poll)
        self.stop()
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.popen.args!r} never answered 200 on {path}:\n{tail}")

    def terminate(self) -> None:
        """Send SIGTERM."""
        self.popen.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait (SIGKILL the group after ``timeout``); return the exit code."""
        with contextlib.suppress(ProcessLookupError):
            if self.popen.poll() is None:
                self.terminate()
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            code = self.popen.wait()
        self._sink.close()
        return code
