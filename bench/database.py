"""A fresh PostgreSQL database per run, managed through the runtime venv's asyncpg."""

from __future__ import annotations

import json
from pathlib import Path

from bench.project import clean_env, run

_ADMIN = """
import asyncio, json, sys
import asyncpg

async def main(dsn, statements):
    connection = await asyncpg.connect(dsn)
    try:
        rows = []
        for statement in statements:
            rows = [list(r.values()) for r in await connection.fetch(statement)]
        print(json.dumps(rows, default=str))
    finally:
        await connection.close()

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
"""


def sql(python: Path, dsn: str, *statements: str) -> list[list[object]]:
    """Run statements on ``dsn`` (a plain postgresql:// URL); return the last one's rows."""
    output = run(
        [str(python), "-c", _ADMIN, dsn, json.dumps(statements)], cwd=python.parent, env=clean_env()
    )
    rows: list[list[object]] = json.loads(output)
    return rows


class Database:
    """Create a database named ``name`` on the server of ``admin_dsn``, drop it afterwards."""

    def __init__(self, python: Path, admin_dsn: str, name: str) -> None:
        self.python = python
        self.admin_dsn = admin_dsn
        self.name = name
        base, _, _ = admin_dsn.rpartition("/")
        self.dsn = f"{base}/{name}"

    @property
    def sqlalchemy_url(self) -> str:
        """Return the URL in the form the service and the baselines take."""
        return self.dsn.replace("postgresql://", "postgresql+asyncpg://", 1)

    def create(self) -> None:
        """Drop any leftover database of the same name and create it empty."""
        sql(self.python, self.admin_dsn, *self._drop(), f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        """Drop the database, disconnecting anything still attached."""
        sql(self.python, self.admin_dsn, *self._drop())

    def _drop(self) -> list[str]:
        return [f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)']
