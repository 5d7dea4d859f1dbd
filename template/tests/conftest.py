"""Shared fixtures: explicit settings (no environment), the app, a client, log capture.

Also the two test tiers. A bare ``pytest`` runs the fast tier: tests marked ``slow`` (real
processes, load, schemathesis, long timeouts) are deselected, and pytest says how many.
``pytest -m "slow or not slow"`` runs everything, as CI does; naming paths (``pytest
tests/process``) or giving ``-m``/``-k`` selects exactly what was asked for.
"""

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from fastapi import FastAPI
from fastapi.testclient import TestClient
from structlog.typing import EventDict

from app.core.config import Settings
from app.main import create_app
from tests.helpers import build_settings

type SettingsFactory = Callable[..., Settings]

_SLOW_DESELECTED = pytest.StashKey[int]()

# Loggers whose handlers and flags `configure_logging` rewrites.
_TOUCHED_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "sqlalchemy", "httpx")


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    """Build settings from keyword overrides; SQLite lives in this test's tmp_path."""

    def make(**overrides: Any) -> Settings:
        return build_settings(tmp_path, **overrides)

    return make


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    """Default test settings."""
    return make_settings()


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    """The application built from the test settings."""
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """A client whose ``with`` block runs the lifespan (engine and HTTP client open)."""
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def logs() -> Iterator[list[EventDict]]:
    """Every structlog event emitted during the test, with context variables merged in."""
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as captured:
        yield captured


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo what a test's `configure_logging` did to structlog and the stdlib loggers."""
    saved = {}
    for name in _TOUCHED_LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers[:], logger.level, logger.propagate)
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def _runs_fast_tier(config: pytest.Config) -> bool:
    """Return whether this is a bare run: no paths, no ``-m`` and no ``-k`` given."""
    explicit = config.args_source is pytest.Config.ArgsSource.ARGS
    return not (explicit or config.option.markexpr or config.option.keyword)


@pytest.hookimpl(trylast=True)  # after the conftests that add markers (tests/integration)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the ``slow`` tests on a bare run; reported like ``-m`` deselections."""
    if not _runs_fast_tier(config):
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]
        config.hook.pytest_deselected(items=slow)
    config.stash[_SLOW_DESELECTED] = len(slow)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Say how to run the slow tests the bare run left out."""
    count = config.stash.get(_SLOW_DESELECTED, 0)
    if count:
        terminalreporter.write_line(
            f'fast tier: {count} slow tests deselected; run them with: pytest -m "slow or not slow"'
        )
