"""A small Dockerfile and .dockerignore reader, just enough for the template's static checks."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

HEREDOC = re.compile(r"<<-?([\"']?)([A-Za-z_][A-Za-z0-9_]*)\1")


@dataclass(frozen=True)
class Instruction:
    """One logical Dockerfile instruction, continuations joined and comments dropped."""

    keyword: str
    flags: tuple[tuple[str, str], ...]
    args: str
    line: int

    def flag(self, name: str) -> str | None:
        """Return the value of the first `--name=value` flag, if any."""
        return next((value for key, value in self.flags if key == name), None)

    def flag_values(self, name: str) -> list[str]:
        """Return the values of every `--name=value` flag (e.g. several `--mount`)."""
        return [value for key, value in self.flags if key == name]


@dataclass
class Stage:
    """One build stage: its FROM image, optional name and instructions."""

    index: int
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def of(self, keyword: str) -> list[Instruction]:
        """Return the stage's instructions with this keyword, in order."""
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """Return the variables set by the stage's ENV instructions (later ones win)."""
        values: dict[str, str] = {}
        for instruction in self.of("ENV"):
            values.update(parse_env(instruction.args))
        return values


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Join `\\` continuations and heredoc bodies; drop comments and blank lines."""
    lines = text.splitlines()
    result: list[tuple[int, str]] = []
    parts: list[str] = []
    start = 0
    index = 0
    while index < len(lines):
        raw = lines[index]
        index += 1
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment and empty lines, even inside a continuation
        if not parts:
            start = index
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        logical = " ".join(parts)
        parts = []
        for match in HEREDOC.finditer(logical):
            body: list[str] = []
            while index < len(lines) and lines[index].strip() != match.group(2):
                body.append(lines[index])
                index += 1
            index += 1  # the terminator line
            logical += "\n" + "\n".join(body)
        result.append((start, logical))
    return result


def parse_instruction(line: int, text: str) -> Instruction:
    """Split one logical line into keyword, leading `--flags` and arguments."""
    keyword, _, rest = text.partition(" ")
    flags: list[tuple[str, str]] = []
    rest = rest.strip()
    while rest.startswith("--"):
        token, _, rest = rest.partition(" ")
        name, _, value = token[2:].partition("=")
        flags.append((name, value))
        rest = rest.strip()
    return Instruction(keyword.upper(), tuple(flags), rest, line)


def parse_dockerfile(path: Path) -> list[Stage]:
    """Parse a Dockerfile into its build stages."""
    stages: list[Stage] = []
    for line, text in logical_lines(path.read_text()):
        instruction = parse_instruction(line, text)
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(len(stages), words[0], name))
        elif stages:
            stages[-1].instructions.append(instruction)
        # ARG before the first FROM (and parser directives) belong to no stage.
    return stages


def parse_env(args: str) -> dict[str, str]:
    """Parse `ENV a=1 b="two words"` (and the legacy `ENV key value` form)."""
    words = shlex.split(args)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def copy_sources(instruction: Instruction) -> list[str]:
    """Return the source paths of a COPY/ADD (exec-form JSON or shell form)."""
    args = instruction.args
    words = shlex.split(args) if not args.startswith("[") else re.findall(r'"([^"]*)"', args)
    return words[:-1]


def read_dockerignore(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """Read .dockerignore into (negated, regex) rules, in file order."""
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip().lstrip("/").removeprefix("./").rstrip("/")
        rules.append((negated, re.compile(translate_pattern(pattern))))
    return rules


def translate_pattern(pattern: str) -> str:
    """Translate a dockerignore glob (`*`, `?`, `**`) to a regex over `/`-separated paths."""
    regex = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            regex, index = regex + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            regex, index = regex + ".*", index + 2
        else:
            char = pattern[index]
            regex += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
            index += 1
    return regex


def is_ignored(rules: list[tuple[bool, re.Pattern[str]]], path: str) -> bool:
    """Tell whether the build context leaves out `path` (a rule on a folder covers its files)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    ignored = False
    for negated, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


# What the builder stage sets for `uv sync`; everything else in its ENV is image plumbing.
UV_BUILD_ENV = ("UV_COMPILE_BYTECODE", "UV_LINK_MODE", "UV_PYTHON_DOWNLOADS", "UV_PYTHON")


def uv_sync_runs(stage: Stage) -> list[tuple[int, Instruction]]:
    """Return (position, instruction) of every RUN in a stage that calls `uv sync`."""
    return [
        (position, instruction)
        for position, instruction in enumerate(stage.instructions)
        if instruction.keyword == "RUN" and "uv sync" in instruction.args
    ]


def copy_sources_and_dest(stage: Stage) -> dict[str, str]:
    """Map the basename of each COPY source to its destination in the stage."""
    mapping = {}
    for copy in stage.of("COPY"):
        words = shlex.split(copy.args)
        for source in words[:-1]:
            mapping[Path(source).name] = words[-1]
    return mapping


@dataclass(frozen=True)
class RuntimeContract:
    """What the image runs, read from a Dockerfile: how its venv is built and how it starts."""

    sync_argv: list[str]
    """The builder's last `uv sync`, from `uv` on."""
    build_env: dict[str, str]
    """The builder's `UV_*` settings for that sync."""
    finish: list[str]
    """The builder's shell-form RUNs after that sync (e.g. stripping the venv), in order."""
    build_venv: str
    """Where the builder makes the venv (its UV_PROJECT_ENVIRONMENT)."""
    venv_dest: str
    """Where the runtime stage copies the venv."""
    runtime_env: dict[str, str]
    """The runtime stage's ENV, as written."""
    argv: list[str]
    """The runtime stage's exec-form CMD."""
    uid: int
    gid: int

    def finish_argvs(self, venv: Path) -> list[list[str]]:
        """Return the builder's finishing RUNs as `sh -c` commands, aimed at ``venv``."""
        return [["sh", "-c", script.replace(self.build_venv, str(venv))] for script in self.finish]

    def env_for(self, venv: Path, base: dict[str, str]) -> dict[str, str]:
        """Apply the runtime ENV on top of ``base``, with the image's venv path moved to ``venv``."""
        env = dict(base)
        for key, value in self.runtime_env.items():
            moved = value.replace(self.venv_dest, str(venv))
            env[key] = moved.replace("${PATH}", env["PATH"]).replace("$PATH", env["PATH"])
        return env


def runtime_contract(stages: list[Stage]) -> RuntimeContract:
    """Read the runtime contract from the first (builder) and last (runtime) stages."""
    builder, final = stages[0], stages[-1]
    position, last_sync = uv_sync_runs(builder)[-1]
    words = shlex.split(last_sync.args)
    finish = [i.args for i in builder.instructions[position + 1 :] if i.keyword == "RUN"]
    if any(script.startswith("[") for script in finish):
        raise ValueError("the builder's RUNs after the last `uv sync` must be in shell form")
    uid, _, gid = final.of("USER")[-1].args.partition(":")
    return RuntimeContract(
        sync_argv=words[words.index("uv") :],
        build_env={key: value for key, value in builder.env().items() if key in UV_BUILD_ENV},
        finish=finish,
        build_venv=builder.env()["UV_PROJECT_ENVIRONMENT"],
        venv_dest=copy_sources_and_dest(final)[".venv"],
        runtime_env=final.env(),
        argv=json.loads(final.of("CMD")[-1].args),
        uid=int(uid),
        gid=int(gid or uid),
    )
