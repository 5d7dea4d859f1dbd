"""Slow: the Kubernetes manifests' containers run for real, the way the manifests run them.

No cluster runs here. What a pod would get is rebuilt around the runtime venv (the image's
stand-in, see tests/runtime.py): the manifest's environment, with the database secret pointing at
the local PostgreSQL; the pod's uid and gid; and `readOnlyRootFilesystem`, as a private mount
namespace in which `/` is remounted read-only and only a 16 MiB tmpfs (the manifests' `/tmp`
emptyDir) can be written. Deviations: the listening port is a free one instead of 8000 (a shared
machine), the scratch tmpfs is reached through TMPDIR instead of sitting on `/tmp` (the runtime
venv itself lives under `/tmp` here), and the drain delay is 0.5 s instead of 5 s (the drain has
tests of its own, tests/test_shutdown.py).
"""

from __future__ import annotations

import os
import subprocess
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


def manifest(rendered: Rendered, path: str) -> dict[str, Any]:
    """Parse one rendered manifest."""
    loaded: dict[str, Any] = yaml.safe_load((rendered.path / path).read_text(encoding="utf-8"))
    return loaded


def pod(rendered: Rendered, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return a Deployment's or a Job's pod security context and its only container."""
    spec = manifest(rendered, path)["spec"]["template"]["spec"]
    [container] = spec["containers"]
    return spec["securityContext"], container


def pod_environment(container: dict[str, Any], database_url: str) -> dict[str, str]:
    """The container's variables, the database secret standing for ``database_url``."""
    env: dict[str, str] = {}
    for variable in container["env"]:
        secret = variable.get("valueFrom", {}).get("secretKeyRef")
        env[variable["name"]] = database_url if secret else variable["value"]
    return env


def read_only_argv(runtime: Runtime, security: dict[str, Any], scratch: Path) -> list[str]:
    """Wrap a command so it runs as the pod's user on a read-only root with a scratch tmpfs."""
    assert (security["runAsUser"], security["runAsGroup"]) == (runtime.uid, runtime.gid)
    uid, gid = str(security["runAsUser"]), str(security["runAsGroup"])
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
        uid,
        gid,
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
    security = {"runAsUser": runtime.uid, "runAsGroup": runtime.gid}
    result = subprocess.run(
        [*read_only_argv(runtime, security, scratch), *command],
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


def test_the_deployment_s_container_serves_and_stops_on_a_read_only_root(
    rendered: Rendered, runtime: Runtime, scratch: Path, tmp_path: Path
) -> None:
    """The image's CMD with the Deployment's variables, uid and read-only root serves both
    probes against PostgreSQL and exits 0 on SIGTERM after its drain."""
    security, container = pod(rendered, "deploy/kubernetes/deployment.yaml")
    port = free_port()
    with scratch_database("keel_deploy") as database:
        env = {
            **runtime.env,
            **pod_environment(container, postgres_url(database, driver="asyncpg")),
            "APP_PORT": str(port),
            "APP_SERVER__DRAIN_DELAY": "0.5",
            "TMPDIR": str(scratch),
        }
        assert "command" not in container, "the Deployment must run the image's own CMD"
        run = serve_probe_stop(
            [*read_only_argv(runtime, security, scratch), *runtime.argv],
            cwd=runtime.workdir,
            env=env,
            port=port,
            log=tmp_path / "log",
        )

    assert {"/livez": 200, "/readyz": 200} == run.statuses, run.output
    assert 0 == run.exit_code, run.output
    assert "Read-only file system" not in run.output
    assert run.output.startswith("{"), "APP_LOG__FORMAT=json: JSON lines from the first"


def test_the_migration_job_migrates_on_a_read_only_root(
    rendered: Rendered, runtime: Runtime, scratch: Path
) -> None:
    """The Job's command, variables and uid bring an empty database to the newest revision."""
    security, container = pod(rendered, "deploy/kubernetes/migrate/job.yaml")
    with scratch_database("keel_deploy_migrate") as database:
        env = {
            **runtime.env,
            **pod_environment(container, postgres_url(database)),
            "TMPDIR": str(scratch),
        }
        result = subprocess.run(
            [*read_only_argv(runtime, security, scratch), *container["command"]],
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
