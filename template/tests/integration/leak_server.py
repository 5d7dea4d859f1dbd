"""Serve the real app plus test-only routes that fail in the ways logs must survive.

Started by test_secrets.py exactly as ``python -m app`` starts the service (settings,
logging, `DrainingServer`). Each route holds the database URL, password included, in a
local variable when it fails: a traceback that shows locals would print it.
"""

from fastapi import APIRouter
from sqlalchemy import text

from app.__main__ import load_settings_or_exit
from app.api.deps import SessionDep, SettingsDep
from app.core.log import configure_logging
from app.main import create_app
from app.server import serve

router = APIRouter(prefix="/leak")


@router.get("/crash")
async def crash(settings: SettingsDep) -> None:
    """An unhandled error in application code (500, logged by the server)."""
    database_url = settings.db.url.get_secret_value()
    raise RuntimeError(f"crashed with a {len(database_url)}-character URL in scope")


@router.get("/sql-error")
async def sql_error(settings: SettingsDep, session: SessionDep) -> None:
    """A failing statement (division by zero: 500, logged by the handler)."""
    database_url = settings.db.url.get_secret_value()
    await session.execute(text("SELECT 1 / (length(:url) - length(:url))"), {"url": database_url})


@router.get("/sleep")
async def sleep(settings: SettingsDep, session: SessionDep, seconds: float) -> None:
    """A statement stopped by APP_DB__STATEMENT_TIMEOUT (503), or any database outage."""
    database_url = settings.db.url.get_secret_value()
    await session.execute(
        text("SELECT pg_sleep(:s), length(:url)"), {"s": seconds, "url": database_url}
    )


def main() -> None:
    """Start the service with the extra routes."""
    settings = load_settings_or_exit()
    configure_logging(settings)
    app = create_app(settings)
    app.include_router(router)
    serve(app, settings)


if __name__ == "__main__":
    main()
