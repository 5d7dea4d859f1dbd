"""The one place that knows every route of the service."""

from fastapi import APIRouter

from app.api.routes import health


def create_router() -> APIRouter:
    """Collect the routers of all resources.

    Returns:
        A router to include in the application.
    """
    router = APIRouter()
    router.include_router(health.router)
    return router
