"""Rules about the service's own code that no linter knows: checked over every module of `app`.

- Secrets: a pydantic field whose name marks it as a secret (the same markers the log redaction
  uses) must be a `SecretStr`/`SecretBytes`, so `repr()`, logs and error messages show `**********`.
- Transactions: only `app.core.db` commits. Everything else writes inside `unit_of_work` (one
  transaction, committed once at the end or rolled back), so a transfer can never be half-written.
"""

import ast
import importlib
import inspect
import pkgutil
import types
import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, SecretBytes, SecretStr

import app
from app.core.log import is_sensitive_key

_SECRET_TYPES = (SecretStr, SecretBytes)
# The one module allowed to commit: it owns the unit of work.
_COMMITTERS = {"app.core.db"}


def app_modules() -> Iterator[types.ModuleType]:
    """Import and yield every module of the `app` package (importing has no side effects)."""
    for info in pkgutil.walk_packages(app.__path__, prefix="app."):
        if info.name != "app.__main__":
            yield importlib.import_module(info.name)


def is_secret_type(annotation: object) -> bool:
    """Tell whether a field annotation is a secret type, alone or inside Optional/Union."""
    if annotation in _SECRET_TYPES:
        return True
    return any(is_secret_type(arg) for arg in typing.get_args(annotation))


def plain_secret_fields() -> list[str]:
    """Return `module.Model.field` for every secret-named field that is not a secret type."""
    found: list[str] = []
    for module in app_modules():
        for name, model in vars(module).items():
            if not (inspect.isclass(model) and issubclass(model, BaseModel)):
                continue
            if model.__module__ != module.__name__:
                continue
            found.extend(
                f"{module.__name__}.{name}.{field}"
                for field, info in model.model_fields.items()
                if is_sensitive_key(field) and not is_secret_type(info.annotation)
            )
    return found


def direct_commits() -> list[str]:
    """Return `path:line` for every `.commit()` call outside the unit-of-work module."""
    found: list[str] = []
    for module in app_modules():
        if module.__name__ in _COMMITTERS or module.__file__ is None:
            continue
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        found.extend(
            f"{module.__name__}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "commit"
        )
    return found


def test_secret_named_fields_are_secret_types() -> None:
    """Fields named like secrets are SecretStr, so logging a model never prints the value."""
    offenders = plain_secret_fields()

    assert offenders == [], f"make these SecretStr (or rename them): {offenders}"


def test_only_the_unit_of_work_commits() -> None:
    """Writes go through `app.core.db.unit_of_work`; no other module calls `.commit()`."""
    offenders = direct_commits()

    assert offenders == [], f"write inside `async with unit_of_work(...)` instead: {offenders}"


def test_the_rules_see_a_plain_secret_and_a_commit() -> None:
    """The checks above are live: they flag a plain-str secret type and a parsed commit call."""

    class Leaky(BaseModel):
        api_token: str
        password: SecretStr | None = None

    tree = ast.parse("async def f(s):\n    await s.commit()\n")
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]

    assert not is_secret_type(Leaky.model_fields["api_token"].annotation)
    assert is_secret_type(Leaky.model_fields["password"].annotation)
    assert [c.func.attr for c in calls if isinstance(c.func, ast.Attribute)] == ["commit"]
