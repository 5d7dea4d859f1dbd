"""Slow: the containers of the Kubernetes manifests and of compose.yaml run for real, as described.

No cluster and no Docker engine run here. What a container would get is rebuilt around the
runtime venv (the image's stand-in, see tests/runtime.py): the file's environment, with the
database URL (a Kubernetes secret, Compose's `db` host) pointing at the local PostgreSQL; the
pod's uid and gid, or for Compose the image's USER; and a read-only root (`readOnlyRootFilesystem`,
Compose's `read_only`), as a private mount namespace in which `/` is remounted read-only and only
a 16 MiB tmpfs (the files' `/tmp`) can be written. Deviations: the listening port is a free one instead of 8000 (a shared
machine), the scratch tmpfs is reached through TMPDIR instead of sitting on `/tmp` (the runtime
venv itself lives under `/tmp` here), and the drain delay is 0.5 s instead of 5 s (the drain has
tests of its own, tests/test_shutdown.py).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import Rendered, postgres_url, psql, scratch_database
from tests.runtime import Runtime
from tests.server import free_port, serve_probe_stop

pytestmark = pytest.mark.slow

# `mount --bind / /` gives `/` a mount of its own in the new namespace, so that remounting it
# read-only leaves the machine's `/` alone; then the scratch tmpfs, then the pod's uid and gid.
READ_ONLY_POD = (
    'mount --bind / / && mount -o remount,bind,ro / && mount -t tmpfs -o size=16m,mode=1777 tmpfs "$1"'
    ' && shift && exec setpriv --reuid="$1" --regid="$2" --clear-groups -- "${@:3}"'
)


@dataclass(frozen=True)
class Container:
    """One container as a deployment file runs it: its variables, user and command."""

    environment: dict[str, Any]
    uid: int
    gid: int
    command: list[str] | None
    """None: the image's own CMD."""

    def env(self, database: str) -> dict[str, str]:
        """The variables, with the database URL (a secret, or Compose's `db` host) at ``database``."""
        values: dict[str, str] = {}
        for name, value in self.environment.items():
            if name == "APP_DB__URL":
                scheme = value.split("://")[0] if isinstance(value, str) else "postgresql+asyncpg"
                values[name] = postgres_url(database).replace("postgresql+asyncpg", scheme, 1)
            else:
                assert isinstance(value, str), f"{name}: only the database URL comes from a secret"
                values[name] = value
        return values


def load_yaml(rendered: Rendered, path: str) -> dict[str, Any]:
    """Parse one rendered YAML file."""
    loaded: dict[str, Any] = yaml.safe_load((rendered.path / path).read_text(encoding="utf-8"))
    return loaded


def container(rendered: Rendered, runtime: Runtime, source: str) -> Container:
    """The container one deployment file describes: a Kubernetes pod or a Compose service."""
    if source.endswith(".yaml"):
        spec = load_yaml(rendered, source)["spec"]["template"]["spec"]
        [pod] = spec["containers"]
        return Container(
            {v["name"]: v.get("value", v.get("valueFrom")) for v in pod["env"]},
            spec["securityContext"]["runAsUser"],
            spec["securityContext"]["runAsGroup"],
            pod.get("command"),
        )
    service = load_yaml(rendered, "compose.yaml")["services"][source.removeprefix("compose ")]
    assert "user" not in service, "Compose runs the image's USER"
    assert service["read_only"] is True
    return Container(service["environment"], runtime.uid, runtime.gid, service.get("command"))


def read_only_argv(runtime: Runtime, uid: int, gid: int, scratch: Path) -> list[str]:
    """Wrap a command so it runs as ``uid:gid`` on a read-only root with a scratch tmpfs."""
    assert (uid, gid) == (runtime.uid, runtime.gid), "not the Dockerfile's USER"
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "bash",
        "-c",
        READ_ONLY_POD,
        "pod",
        str(scratch),
        str(uid),
        str(gid),
    ]


@pytest.fixture
def scratch(runtime: Runtime) -> Path:
    """An empty directory for the pod's writable tmpfs (mounted inside the namespace only)."""
    if os.geteuid() != 0:
        pytest.skip("a read-only mount namespace and the pod's uid need root")
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        reason = f"this kernel refuses a private mount namespace: {probe.stderr.strip()}"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(reason)  # CI's machines allow it; a skip there would hide the tests
        pytest.skip(reason)
    path = runtime.root / f"scratch-{os.getpid()}-{free_port()}"
    path.mkdir()
    return path


def test_the_pod_s_root_really_is_read_only(runtime: Runtime, scratch: Path) -> None:
    """Under the wrapper the pod's uid can write its tmpfs and nothing else, not even its workdir."""
    probe = (
        "import os, sys, tempfile\n"
        "tempfile.NamedTemporaryFile(dir=sys.argv[1]).close()\n"
        "try:\n"
        "    open('written-by-the-pod', 'w')\n"
        "except OSError as error:\n"
        "    print(error.strerror)\n"
        "print(os.getuid(), os.getgid())\n"
    )
    command = [runtime.argv[0], "-c", probe, str(scratch)]
    result = subprocess.run(
        [*read_only_argv(runtime, runtime.uid, runtime.gid, scratch), *command],
        cwd=runtime.workdir,
        env=runtime.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["Read-only file system", f"{runtime.uid} {runtime.gid}"]
    assert not (runtime.workdir / "written-by-the-pod").exists()


@pytest.mark.parametrize("source", ["deploy/kubernetes/deployment.yaml", "compose app"])
def test_the_service_container_serves_and_stops_on_a_read_only_root(
    rendered: Rendered, runtime: Runtime, scratch: Path, tmp_path: Path, source: str
) -> None:
    """The image's CMD with the file's variables, user and read-only root serves both probes
    against PostgreSQL and exits 0 on SIGTERM after its drain."""
    described = container(rendered, runtime, source)
    assert described.command is None, "the service must run the image's own CMD"
    port = free_port()
    with scratch_database("keel_deploy") as database:
        env = {
            **runtime.env,
            **described.env(database),
            "APP_PORT": str(port),
            "APP_SERVER__DRAIN_DELAY": "0.5",
            "TMPDIR": str(scratch),
        }
        run = serve_probe_stop(
            [*read_only_argv(runtime, described.uid, described.gid, scratch), *runtime.argv],
            cwd=runtime.workdir,
            env=env,
            port=port,
            log=tmp_path / "log",
        )

    assert {"/livez": 200, "/readyz": 200} == run.statuses, run.output
    assert 0 == run.exit_code, run.output
    assert "Read-only file system" not in run.output
    assert run.output.startswith("{"), "JSON lines from the first (production, no terminal)"


@pytest.mark.parametrize("source", ["deploy/kubernetes/migrate/job.yaml", "compose migrate"])
def test_the_migration_container_migrates_on_a_read_only_root(
    rendered: Rendered, runtime: Runtime, scratch: Path, source: str
) -> None:
    """The file's migration command, variables and user bring an empty database to the newest
    revision."""
    described = container(rendered, runtime, source)
    assert described.command is not None
    with scratch_database("keel_deploy_migrate") as database:
        env = {**runtime.env, **described.env(database), "TMPDIR": str(scratch)}
        result = subprocess.run(
            [*read_only_argv(runtime, described.uid, described.gid, scratch), *described.command],
            cwd=runtime.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        revision = psql("SELECT version_num FROM alembic_version", database)
        heads = sorted((rendered.path / "src/app/migrations/versions").glob("0*.py"))

    assert result.returncode == 0, result.stdout + result.stderr
    assert revision == heads[-1].name.split("_")[0], (revision, [h.name for h in heads])
