"""Database migrations: ``python -m app.migrate <alembic command>`` and the Alembic config.

The migration scripts live inside the package (``app/migrations``), so they are installed
with the service and run from the container image, which has no ``alembic.ini`` and no
``pyproject.toml``. Every Alembic command works, for example::

    python -m app.migrate upgrade head
    python -m app.migrate downgrade -1
    python -m app.migrate current
    python -m app.migrate check
    python -m app.migrate revision --autogenerate -m "add invoices"

The database is the service's own: ``APP_DB__URL`` and the other ``APP_DB__*`` settings,
validated as the service validates them (a bad value exits with status 2 and is never
echoed). Logs use the service's format.
"""

import importlib.util
import logging
import sys
from collections.abc import Sequence
from typing import TypedDict

import structlog
from alembic.config import CommandLine, Config
from sqlalchemy.exc import SQLAlchemyError

from app.__main__ import load_settings_or_exit
from app.core.config import Settings
from app.core.log import configure_logging

SCRIPT_LOCATION = "app:migrations"
"""The migration scripts as a package resource: found wherever ``app`` is installed."""

SETTINGS_KEY = "app.settings"
"""Key of `Config.attributes` under which env.py finds the settings to migrate with."""

MIGRATION_LOCK_ID = 7_201_534_219
"""Key of the PostgreSQL advisory lock env.py holds while migrating (arbitrary but fixed)."""

EXIT_MIGRATION_FAILED = 1

_log = structlog.get_logger(__name__)


class ComparisonOptions(TypedDict):
    """How autogenerate compares models with a database; env.py and the drift test share it."""

    compare_type: bool
    render_as_batch: bool


def comparison_options(backend: str) -> ComparisonOptions:
    """Return the comparison options for a database backend.

    Args:
        backend: The SQLAlchemy backend name, e.g. ``"sqlite"`` or ``"postgresql"``.

    Returns:
        Column types are compared; on SQLite, which cannot ALTER most things in place,
        operations are rendered in batch mode (copy the table, move the rows, swap).
    """
    return {"compare_type": True, "render_as_batch": backend == "sqlite"}


def migration_config(settings: Settings | None = None) -> Config:
    """Build the Alembic configuration in code, without an ini file.

    Args:
        settings: The settings whose database to migrate. Without them, env.py loads
            the settings from the environment, as the service does.

    Returns:
        A `Config` for ``alembic.command`` functions.
    """
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    # Revision files are named <revision>_<slug>.py, e.g. 0002_add_invoices.py.
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    # env.py also runs for `revision` without --autogenerate, so it can number the revision.
    config.set_main_option("revision_environment", "true")
    config.set_main_option("path_separator", "os")
    if importlib.util.find_spec("ruff") is not None:
        # Development only (ruff is a dev tool): lint-fix and format each new revision file.
        config.set_section_option("post_write_hooks", "hooks", "ruff_fix, ruff_format")
        for hook, options in (
            ("ruff_fix", "check --fix --quiet REVISION_SCRIPT_FILENAME"),
            ("ruff_format", "format --quiet REVISION_SCRIPT_FILENAME"),
        ):
            config.set_section_option("post_write_hooks", f"{hook}.type", "module")
            config.set_section_option("post_write_hooks", f"{hook}.module", "ruff")
            config.set_section_option("post_write_hooks", f"{hook}.options", options)
    if settings is not None:
        config.attributes[SETTINGS_KEY] = settings
    return config


def main(argv: Sequence[str] | None = None) -> None:
    """Run one Alembic command against the service's database.

    Args:
        argv: The Alembic command line, e.g. ``["upgrade", "head"]``; defaults to
            ``sys.argv[1:]``.

    Raises:
        SystemExit: 2 on bad configuration, 1 when the migration fails, and Alembic's own
            status on a usage or command error.
    """
    cli = CommandLine(prog="python -m app.migrate")
    options = cli.parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not hasattr(options, "cmd"):
        cli.parser.error("a command is required, e.g. `upgrade head`")
    settings = load_settings_or_exit()
    # Logs go to stderr: stdout carries the command's output, such as the SQL of `--sql`.
    configure_logging(settings, stream=sys.stderr)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    config = migration_config(settings)
    config.cmd_opts = options
    try:
        cli.run_cmd(config, options)
    except (SQLAlchemyError, OSError):
        _log.exception("migrate.failed", command=options.cmd[0].__name__)
        raise SystemExit(EXIT_MIGRATION_FAILED) from None


if __name__ == "__main__":
    main()
