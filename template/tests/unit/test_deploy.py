"""The Kubernetes manifests and compose.yaml agree with the service they deploy.

The schemas (field names, types) are checked by kubernetes-validate and check-jsonschema in CI's
lint job; these tests check what a schema cannot: that the numbers and names in the files match
the settings, the Dockerfile and each other.
"""

import functools
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from app.core.config import Settings
from app.main import create_app
from tests.helpers import IsolatedSettings, setting_env_names

ROOT = Path(__file__).parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "compose.yaml"

SHUTDOWN_MARGIN = 3.0
"""Seconds the lifespan shutdown and the interpreter's exit need after the shutdown timeout."""
POSTGRES_MAX_CONNECTIONS = 100
"""PostgreSQL's default `max_connections`; change it with your server's."""
POSTGRES_RESERVED_CONNECTIONS = 3
"""PostgreSQL's default `superuser_reserved_connections`, which no service may use."""
MIGRATION_CONNECTIONS = 1
"""Connections `python -m app.migrate` holds while it runs (alembic's one)."""
REFERENCED_DATABASE_URL = "postgresql://service@db.internal:5432/service"
"""What a `secretKeyRef` for the database URL is taken to hold."""

type Manifest = dict[str, Any]


@functools.cache
def load(path: Path) -> Any:
    """Parse one YAML file once per run, with libyaml's safe loader (in every PyYAML wheel).

    The tests only read what it returns.
    """
    return yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)


def manifests() -> dict[str, Manifest]:
    """Every Kubernetes object under deploy/kubernetes, by kind."""
    found: dict[str, Manifest] = {}
    for path in sorted(KUBERNETES.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            manifest = load(path)
            assert manifest["kind"] not in found, f"{path}: a second {manifest['kind']}"
            found[manifest["kind"]] = manifest
    return found


def pod_spec(kind: str) -> Manifest:
    """The pod template's spec of a Deployment or a Job."""
    spec: Manifest = manifests()[kind]["spec"]["template"]["spec"]
    return spec


def only_container(kind: str) -> Manifest:
    """The one container of a Deployment's or a Job's pod."""
    containers: list[Manifest] = pod_spec(kind)["containers"]
    assert len(containers) == 1, [c["name"] for c in containers]
    return containers[0]


def environment(container: Manifest) -> dict[str, str]:
    """A container's environment, with each secret reference replaced by a stand-in URL."""
    values: dict[str, str] = {}
    for variable in container.get("env", []):
        if "valueFrom" in variable:
            assert variable["valueFrom"].keys() == {"secretKeyRef"}, variable
            values[variable["name"]] = REFERENCED_DATABASE_URL
        else:
            assert isinstance(variable["value"], str), f"{variable['name']}: quote the value"
            values[variable["name"]] = variable["value"]
    return values


def settings_from(values: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a process started with exactly ``values`` (and no .env file) reads."""
    for name in list(os.environ):
        if name.upper().startswith("APP_"):
            monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


def compose_services() -> dict[str, Manifest]:
    """The services of compose.yaml."""
    services: dict[str, Manifest] = load(COMPOSE)["services"]
    return services


def seconds(duration: str) -> float:
    """Compose's duration (`30s`, `1m30s`) in seconds."""
    parts = re.fullmatch(r"(?=\d)(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts is not None, f"unreadable duration {duration!r}"
    minutes, secs = parts.groups(default="0")
    return int(minutes) * 60 + int(secs)


def test_every_manifest_is_deployed_by_a_kustomization() -> None:
    """Each kustomization lists exactly the manifests beside it, and both set the same image."""
    kustomizations = sorted(KUBERNETES.rglob("kustomization.yaml"))
    images = []
    for kustomization in kustomizations:
        listed = load(kustomization)
        beside = {p.name for p in kustomization.parent.glob("*.yaml")} - {kustomization.name}
        assert sorted(listed["resources"]) == sorted(beside), kustomization
        images.append(listed["images"])

    assert len(kustomizations) == 2
    assert images[0] == images[1], "the service and its migrations must run the same image"
    [image] = images[0]
    assert image["newTag"] != "latest"
    for kind in ("Deployment", "Job"):
        assert only_container(kind)["image"] == image["name"], f"kustomize would miss {kind}"


def test_selectors_and_references_find_the_service_s_pods() -> None:
    """The Service, the disruption budget and the autoscaler all reach the Deployment's pods."""
    objects = manifests()
    deployment = objects["Deployment"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    target = objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    job_labels = objects["Job"]["spec"]["template"]["metadata"]["labels"]

    assert selector.items() <= pod_labels.items()
    assert objects["Service"]["spec"]["selector"] == selector
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    assert target == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert not selector.items() <= job_labels.items(), "the Service would send traffic to the job"
    spreads = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {s["topologyKey"] for s in spreads} >= {"kubernetes.io/hostname"}
    assert all(s["labelSelector"]["matchLabels"] == selector for s in spreads)
    [port] = objects["Service"]["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in only_container("Deployment")["ports"]}


def test_probes_ask_the_service_s_own_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """Liveness and startup ask /livez, readiness /readyz, on the port the service listens on."""
    container = only_container("Deployment")
    settings = settings_from(environment(container), monkeypatch)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    served = {getattr(route, "path", None) for route in create_app(IsolatedSettings()).routes}
    probes = {
        name: container[name]["httpGet"]
        for name in ("startupProbe", "livenessProbe", "readinessProbe")
    }

    assert {name: probe["path"] for name, probe in probes.items()} == {
        "startupProbe": "/livez",
        "livenessProbe": "/livez",
        "readinessProbe": "/readyz",
    }
    assert {"/livez", "/readyz"} <= served
    assert {ports[probe["port"]] for probe in probes.values()} == {settings.port}
    assert settings.host == "0.0.0.0"  # noqa: S104 - the pod's address, reached by the kubelet
    # A probe that gives up first would count a slow database as a dead replica's timeout
    # instead of reading the service's own 503.
    readiness_timeout = container["readinessProbe"]["timeoutSeconds"]
    assert readiness_timeout > settings.server.readiness_timeout


def test_environments_are_settings_the_service_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every APP_ variable the files set is a real setting, and together they validate."""
    known = setting_env_names()
    environments = {
        "Deployment": environment(only_container("Deployment")),
        "Job": environment(only_container("Job")),
        **{
            f"compose {name}": dict(s["environment"])
            for name, s in compose_services().items()
            if name != "db"
        },
    }
    for where, values in environments.items():
        unknown = sorted(set(values) - known)
        assert not unknown, f"{where}: {unknown} are not settings; a typo is silently ignored"
        try:
            settings = settings_from(values, monkeypatch)
        except ValidationError as error:
            pytest.fail(f"{where}: the service would exit with code 2: {error}")
        assert settings.environment == "production", where


def test_a_misspelt_variable_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above fails on a typo the service itself would ignore without a word."""
    known = setting_env_names()
    # One underscore where the group needs two: not a setting, and not refused either.
    values = {**environment(only_container("Deployment")), "APP_LOG_LEVEL": "DEBUG"}

    assert sorted(set(values) - known) == ["APP_LOG_LEVEL"]
    assert settings_from(values, monkeypatch).log.level == "INFO"


def test_grace_periods_cover_drain_and_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL comes only after the drain delay, the shutdown timeout and a margin."""
    pod = pod_spec("Deployment")
    kubernetes = settings_from(environment(only_container("Deployment")), monkeypatch).server
    app = compose_services()["app"]
    compose = settings_from(dict(app["environment"]), monkeypatch).server

    needed = kubernetes.drain_delay + kubernetes.shutdown_timeout + SHUTDOWN_MARGIN
    assert pod["terminationGracePeriodSeconds"] >= needed
    assert seconds(app["stop_grace_period"]) >= (
        compose.drain_delay + compose.shutdown_timeout + SHUTDOWN_MARGIN
    )


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_pods_run_as_the_image_s_user_without_privileges(kind: str) -> None:
    """Non-root as the Dockerfile's uid, read-only root, no capabilities, no API token."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    uid, gid = re.findall(r"^USER (\d+):(\d+)$", dockerfile, flags=re.MULTILINE)[-1]
    pod = pod_spec(kind)
    container = only_container(kind)

    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": int(uid),
        "runAsGroup": int(gid),
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["automountServiceAccountToken"] is False
    # A Service named `app` would otherwise inject APP_PORT=tcp://... and stop the service.
    assert pod["enableServiceLinks"] is False
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    scratch = "/tmp"  # noqa: S108 - the pod's own in-memory emptyDir, not the host's /tmp
    assert volumes[mounts[scratch]]["emptyDir"]["sizeLimit"]


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_containers_request_resources_and_limit_memory(kind: str) -> None:
    """The scheduler and the autoscaler need requests; a leak must hit a limit, not the node."""
    resources = only_container(kind)["resources"]

    assert resources["requests"].keys() == {"cpu", "memory"}
    assert resources["limits"].keys() == {"memory"}, "no CPU limit: throttling stalls requests"
    assert quantity(resources["limits"]["memory"]) >= 2 * quantity(resources["requests"]["memory"])


def quantity(value: str) -> int:
    """A Kubernetes memory quantity in bytes (`128Mi`, `1Gi`)."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    parts = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", value)
    assert parts is not None, f"unreadable memory quantity {value!r}"
    return int(parts[1]) * units[parts[2]]


def test_replicas_survive_disruptions_and_rollouts() -> None:
    """Two replicas at least, one evicted at a time, and a rollout never lowers capacity."""
    objects = manifests()
    deployment = objects["Deployment"]["spec"]
    autoscaler = objects["HorizontalPodAutoscaler"]["spec"]

    assert "replicas" not in deployment, "the autoscaler owns the count; apply would reset it"
    assert autoscaler["minReplicas"] >= 2
    assert objects["PodDisruptionBudget"]["spec"]["maxUnavailable"] < autoscaler["minReplicas"]
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_database_connections_fit_the_server_at_full_scale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every replica's full pool, during a rollout at maximum scale, fits max_connections."""
    objects = manifests()
    database = settings_from(environment(only_container("Deployment")), monkeypatch).db
    if database.pgbouncer:
        pytest.skip(
            "behind PgBouncer the pools are client connections: size its max_client_conn for"
            " them and its default_pool_size for the server, which these files do not set"
        )
    replicas = (
        objects["HorizontalPodAutoscaler"]["spec"]["maxReplicas"]
        + objects["Deployment"]["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    )

    per_replica = database.pool_size + database.max_overflow
    available = POSTGRES_MAX_CONNECTIONS - POSTGRES_RESERVED_CONNECTIONS
    assert replicas * per_replica + MIGRATION_CONNECTIONS <= available, (
        f"{replicas} replicas x {per_replica} connections + {MIGRATION_CONNECTIONS} "
        f"exceed {available}: lower maxReplicas or the pool, or put PgBouncer in front"
    )


def test_compose_serves_on_localhost_and_matches_ci_s_database() -> None:
    """Local PostgreSQL: published on 127.0.0.1 only, the CI workflow's version and credentials."""
    services = compose_services()
    workflow = load(ROOT / ".github" / "workflows" / "ci.yml")
    ci_postgres = workflow["jobs"]["test"]["services"]["postgres"]
    db = services["db"]

    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"
    assert db["environment"] == ci_postgres["env"]
    assert db["image"].split(":")[1].split("-")[0] == ci_postgres["image"].split(":")[1]
    assert db["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert services["app"]["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    for name in ("app", "migrate"):
        assert services[name]["read_only"] is True
        assert services[name]["cap_drop"] == ["ALL"]
