"""The Dockerfile's contract: static checks, plus its runtime venv and CMD run for real.

There is no Docker engine here, so the image is never built. The fast checks read the Dockerfile
and .dockerignore; the slow ones rebuild the image's venv with the builder's own `uv sync` and
start the exact CMD with the runtime stage's environment.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.dockerfile import (
    Instruction,
    Stage,
    copy_sources,
    is_ignored,
    parse_dockerfile,
    parse_env,
    read_dockerignore,
    runtime_contract,
    uv_sync_runs,
)
from tests.helpers import Rendered, run_checked
from tests.runtime import Runtime
from tests.server import free_port, serve_probe_stop

UV_IMAGE = re.compile(r"^ghcr\.io/astral-sh/uv:(?P<tag>[^@\s]+)(?P<digest>@sha256:[0-9a-f]{64})?$")
PINNED_TAG = re.compile(r"^\d+\.\d+\.\d+$")
# Package managers, compilers and uv itself (which is also the only way to add dev groups).
BUILD_TOOLS = re.compile(
    r"\b(?:apt-get install|apt install|apk add|build-essential|gcc|g\+\+|make|pip install|uvx?)\b"
)
MUST_IGNORE = [
    ".venv",
    ".venv/bin/python",
    ".git",
    ".git/config",
    ".pytest_cache/v/cache/nodeids",
    ".mypy_cache/3.13/app.json",
    ".ruff_cache/CACHEDIR.TAG",
    "src/app/__pycache__/main.cpython-313.pyc",
    ".env",
]


def stages_of(rendered: Rendered) -> list[Stage]:
    """Parse the rendered Dockerfile."""
    return parse_dockerfile(rendered.path / "Dockerfile")


def dependency_layer(stage: Stage) -> tuple[int, Instruction]:
    """Return the RUN that installs the locked dependencies without the project."""
    runs = [
        (position, run)
        for position, run in uv_sync_runs(stage)
        if {"--locked", "--no-install-project", "--no-dev"} <= set(run.args.split())
    ]
    assert runs, "no `uv sync --locked --no-install-project --no-dev` in the builder"
    return runs[0]


def uv_image_tag(rendered: Rendered) -> str:
    """Return the tag of the uv image the builder copies uv from."""
    builder = stages_of(rendered)[0]
    images = [copy.flag("from") or "" for copy in builder.of("COPY")]
    matches = [m for m in map(UV_IMAGE.match, images) if m]
    assert 1 == len(matches), f"expected one COPY --from=ghcr.io/astral-sh/uv:<tag>, got {images}"
    return matches[0].group("tag")


def test_dockerfile_passes_hadolint(rendered: Rendered) -> None:
    """hadolint (from the dev environment) reports nothing on the rendered Dockerfile."""
    hadolint = Path(sys.executable).parent / "hadolint"

    result = run_checked([str(hadolint), "--no-color", "Dockerfile"], cwd=rendered.path)

    assert "" == result.stdout.strip()


def test_dockerfile_has_builder_and_runtime_stages(rendered: Rendered) -> None:
    """The image is built in at least two stages, so build tools stay out of the runtime."""
    stages = stages_of(rendered)

    assert len(stages) >= 2
    assert stages[0].name is not None


def test_builder_copies_a_pinned_uv(rendered: Rendered) -> None:
    """uv comes from ghcr.io/astral-sh/uv at an exact version, never `latest`."""
    tag = uv_image_tag(rendered)

    assert PINNED_TAG.match(tag), tag


def test_pinned_uv_can_build_the_project(rendered: Rendered) -> None:
    """The pinned uv is the CI's uv and satisfies uv_build's range and `required-version`."""
    version = Version(uv_image_tag(rendered))
    pyproject = tomllib.loads((rendered.path / "pyproject.toml").read_text())
    build = next(r for r in pyproject["build-system"]["requires"] if r.startswith("uv_build"))
    workflow = yaml.safe_load((rendered.path / ".github/workflows/ci.yml").read_text())

    assert version in SpecifierSet(build.removeprefix("uv_build"))
    assert version in SpecifierSet(pyproject["tool"]["uv"]["required-version"])
    assert str(version) == workflow["env"]["UV_VERSION"]


def test_dependencies_install_before_the_code_is_copied(rendered: Rendered) -> None:
    """The locked dependency layer is built before `COPY src`, so code edits reuse it."""
    builder = stages_of(rendered)[0]
    deps_position, _ = dependency_layer(builder)
    code_copies = [
        position
        for position, instruction in enumerate(builder.instructions)
        if instruction.keyword in {"COPY", "ADD"}
        and any(Path(src).parts[:1] in {("src",), (".",)} for src in copy_sources(instruction))
    ]

    assert code_copies, "the builder never copies src"
    assert deps_position < min(code_copies)


def test_dependency_layer_uses_a_uv_cache_mount(rendered: Rendered) -> None:
    """Every `uv sync` in the builder mounts uv's cache instead of baking it into a layer."""
    builder = stages_of(rendered)[0]

    for _, run in uv_sync_runs(builder):
        mounts = run.flag_values("mount")
        assert any("type=cache" in m and "/.cache/uv" in m for m in mounts), run.args


def test_builder_sets_uv_environment_before_syncing(rendered: Rendered) -> None:
    """Bytecode compilation, copy link mode and no Python downloads are set before `uv sync`."""
    builder = stages_of(rendered)[0]
    deps_position, _ = dependency_layer(builder)
    env: dict[str, str] = {}
    for instruction in builder.instructions[:deps_position]:
        if instruction.keyword == "ENV":
            env.update(parse_env(instruction.args))

    expected = {"UV_COMPILE_BYTECODE": "1", "UV_LINK_MODE": "copy", "UV_PYTHON_DOWNLOADS": "never"}
    assert expected == {key: env.get(key) for key in expected}


def test_runtime_base_is_the_answered_slim_image(rendered: Rendered) -> None:
    """The runtime stage starts from python:<answered version>-slim-bookworm (digest optional)."""
    runtime = stages_of(rendered)[-1]
    version = re.escape(rendered.combo.python)

    assert re.fullmatch(rf"python:{version}-slim-bookworm(@sha256:[0-9a-f]{{64}})?", runtime.image)


def test_runtime_copies_only_the_venv_from_the_builder(rendered: Rendered) -> None:
    """The runtime receives the virtual environment (and code) from a build stage, nothing else."""
    stages = stages_of(rendered)
    earlier = {s.name for s in stages[:-1]} | {str(s.index) for s in stages[:-1]}
    runtime = stages[-1]
    copies = runtime.of("COPY") + runtime.of("ADD")

    assert copies
    for copy in copies:
        assert copy.keyword == "COPY", "ADD can fetch URLs and unpack archives"
        assert copy.flag("from") in earlier, f"line {copy.line} copies from outside the build"
        for source in copy_sources(copy):
            name = Path(source).name
            assert name == ".venv" or "src" in Path(source).parts, source
            assert name not in {"uv", "uvx"}


def test_runtime_has_no_build_or_dev_tools(rendered: Rendered) -> None:
    """The runtime stage installs no compilers, package managers, uv or dev dependencies."""
    runtime = stages_of(rendered)[-1]

    offending = [r.args for r in runtime.of("RUN") if BUILD_TOOLS.search(r.args)]
    assert [] == offending
    assert "astral-sh/uv" not in runtime.image


def test_runtime_runs_as_a_numeric_non_root_user(rendered: Rendered) -> None:
    """The last USER is a numeric uid (and gid), not root, so Kubernetes can verify it."""
    users = stages_of(rendered)[-1].of("USER")

    assert users, "the runtime stage has no USER"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1].args)
    assert match, f"USER {users[-1].args} is not numeric"
    assert 0 not in {int(part) for part in match.groups() if part is not None}


def test_cmd_is_an_exec_form_json_array(rendered: Rendered) -> None:
    """CMD (and any ENTRYPOINT) is a JSON array, so the service is PID 1 and gets SIGTERM."""
    runtime = stages_of(rendered)[-1]
    commands = runtime.of("CMD")
    assert commands, "the runtime stage has no CMD"

    for instruction in [commands[-1], *runtime.of("ENTRYPOINT")]:
        argv = json.loads(instruction.args)
        assert isinstance(argv, list)
        assert argv
        assert all(isinstance(word, str) for word in argv)


def test_dockerignore_keeps_local_state_out(rendered: Rendered) -> None:
    """The build context leaves out the venv, git data, tool caches and `.env`."""
    rules = read_dockerignore(rendered.path / ".dockerignore")

    assert [] == [path for path in MUST_IGNORE if not is_ignored(rules, path)]


def test_dockerignore_keeps_what_the_build_uses(rendered: Rendered) -> None:
    """Every file the Dockerfile copies or bind-mounts from the context is in the context."""
    rules = read_dockerignore(rendered.path / ".dockerignore")
    used = ["src/app/main.py"]
    for stage in stages_of(rendered):
        for instruction in stage.instructions:
            if instruction.keyword in {"COPY", "ADD"} and instruction.flag("from") is None:
                used += copy_sources(instruction)
            for mount in instruction.flag_values("mount"):
                options = dict(part.split("=", 1) for part in mount.split(",") if "=" in part)
                if options.get("type") == "bind" and "from" not in options:
                    used.append(options.get("source", "."))

    assert {"pyproject.toml", "uv.lock"} <= set(used)
    assert [] == [path for path in used if path != "." and is_ignored(rules, path)]


@pytest.mark.parametrize(
    ("rule", "path", "ignored"),
    [
        (".venv/", ".venv/lib/site.py", True),
        ("*.db", "app.db", True),
        ("*.db", "data/app.db", False),
        ("**/*.db", "data/app.db", True),
        ("/build", "build", True),
        ("*\n!src", "src/app/main.py", False),
        ("*\n!src", "pyproject.toml", True),
    ],
    ids=["folder", "glob", "glob-top-only", "globstar", "anchored", "negated", "catch-all"],
)
def test_dockerignore_reader_follows_docker_rules(
    tmp_path: Path, rule: str, path: str, ignored: bool
) -> None:
    """The small .dockerignore reader used above agrees with Docker on common rules."""
    dockerignore = tmp_path / ".dockerignore"
    dockerignore.write_text(rule + "\n")

    assert ignored == is_ignored(read_dockerignore(dockerignore), path)


def test_builder_strips_the_venvs_extension_modules(rendered: Rendered) -> None:
    """After the last `uv sync` the builder strips the venv's .so files, which the harness replays."""
    contract = runtime_contract(stages_of(rendered))

    assert any("strip --strip-unneeded" in script for script in contract.finish), contract.finish
    assert all(contract.build_venv in script for script in contract.finish), contract.finish


def test_builder_slims_the_libraries_bytecode(rendered: Rendered) -> None:
    """The builder runs scripts/slim_bytecode.py on the venv, with the venv's own interpreter."""
    stages = stages_of(rendered)
    contract = runtime_contract(stages)

    assert f"{contract.build_venv}/bin/python scripts/slim_bytecode.py" in contract.finish
    assert any("scripts/slim_bytecode.py" in copy_sources(i) for i in stages[0].of("COPY"))
    assert not is_ignored(
        read_dockerignore(rendered.path / ".dockerignore"), "scripts/slim_bytecode.py"
    )


# In the runtime venv: the OpenAPI document and who kept its docstrings.
DOCSTRING_PROBE = """
import json, fastapi, pydantic, sqlalchemy, structlog, app.main
from app.core.config import Settings
print(json.dumps({
    "openapi": app.main.create_app(Settings()).openapi(),
    "libraries": [
        o.__doc__ for o in (fastapi.FastAPI, pydantic.BaseModel, sqlalchemy.select, structlog.get_logger)
    ],
    "service": app.main.create_app.__doc__,
}))
"""


@pytest.mark.slow
def test_runtime_venv_libraries_carry_no_docstrings_and_the_openapi_is_unchanged(
    runtime: Runtime, tmp_path: Path
) -> None:
    """Slimmed library bytecode leaves the service's own docstrings, and so its OpenAPI, whole.

    The comparison run compiles every module afresh from its source (PYTHONPYCACHEPREFIX points
    at an empty directory), which is what the venv held before the builder slimmed it.
    """
    python = str(runtime.root / "venv" / "bin" / "python")

    def probe(**extra: str) -> dict[str, Any]:
        env = {**runtime.env, **extra}
        completed = run_checked([python, "-c", DOCSTRING_PROBE], cwd=runtime.workdir, env=env)
        result: dict[str, Any] = json.loads(completed.stdout)
        return result

    slimmed = probe()
    from_source = probe(PYTHONPYCACHEPREFIX=str(tmp_path / "fresh-bytecode"))

    assert slimmed["libraries"] == [None, None, None, None]
    assert None not in from_source["libraries"]
    assert slimmed["service"] == from_source["service"] is not None
    assert slimmed["openapi"] == from_source["openapi"]


DEV_TOOLS = ("pytest", "mypy", "ruff", "hadolint", "zizmor", "uv", "uvx")
# The venv the image ships, bytecode included (issue 6). Unstripped it was 81.6 MiB.
VENV_BUDGET_MIB = 70


@pytest.mark.slow
def test_runtime_venv_has_no_dev_tools(runtime: Runtime) -> None:
    """The venv the image ships holds the service and its runtime dependencies only."""
    bin_dir = runtime.root / "venv" / "bin"

    assert (bin_dir / "python").exists()
    assert [] == [tool for tool in DEV_TOOLS if (bin_dir / tool).exists()]


@pytest.mark.slow
def test_runtime_venv_fits_its_size_budget(runtime: Runtime) -> None:
    """The venv the image ships, bytecode included, stays within VENV_BUDGET_MIB."""
    venv = runtime.root / "venv"
    files = [p for p in venv.rglob("*") if p.is_file() and not p.is_symlink()]
    size_mib = sum(p.lstat().st_size for p in files) / 2**20

    assert size_mib <= VENV_BUDGET_MIB
    assert [] == [p.name for p in files if p.suffix == ".so" and has_debug_symbols(p)]


def has_debug_symbols(path: Path) -> bool:
    """Tell whether an ELF file still carries a symbol table or DWARF sections."""
    sections = run_checked(["readelf", "--section-headers", "--wide", str(path)], cwd=path.parent)
    return bool(re.search(r"\s\.(?:symtab|debug_\w+)\s", sections.stdout))


@pytest.mark.slow
def test_runtime_cmd_serves_and_stops_on_sigterm(runtime: Runtime, tmp_path: Path) -> None:
    """The Dockerfile's exact CMD, on the runtime venv, serves the probes and exits 0 on SIGTERM."""
    port = free_port()

    run = serve_probe_stop(
        runtime.argv,
        cwd=runtime.workdir,
        env={**runtime.env, "APP_PORT": str(port)},
        port=port,
        log=tmp_path / "log",
    )

    assert {"/livez": 200, "/readyz": 200} == run.statuses, run.output
    assert 0 == run.exit_code, run.output


@pytest.mark.slow
def test_runtime_cmd_runs_as_the_image_user(runtime: Runtime) -> None:
    """The CMD also starts, serves and stops as the image's non-root uid:gid."""
    if os.geteuid() != 0:
        pytest.skip("switching to the image's uid needs root")
    port = free_port()

    run = serve_probe_stop(
        runtime.argv,
        cwd=runtime.workdir,
        env={**runtime.env, "APP_PORT": str(port)},
        port=port,
        log=runtime.root / "server-as-user.log",
        user=runtime.uid,
        group=runtime.gid,
    )

    assert {"/livez": 200, "/readyz": 200} == run.statuses, run.output
    assert 0 == run.exit_code, run.output
