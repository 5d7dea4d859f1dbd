"""The models registry: one place that imports every ORM model module of the service.

Alembic's autogenerate and the drift test compare the database with ``Base.metadata``,
which only knows the tables whose model classes have been imported. `load_models`
imports every module of this package, so a model cannot be forgotten by the
migrations: put each model module here (``app/models/<name>.py``) and it is registered.
Importing this package imports nothing else; the modules load on the first call.
"""

import importlib
import pkgutil

from sqlalchemy import MetaData

from app.core.db import Base


def model_modules() -> list[str]:
    """Return the names of the model modules in this package, sorted.

    Returns:
        Module names such as ``app.models.accounts``.
    """
    return sorted(module.name for module in pkgutil.iter_modules(__path__, f"{__name__}."))


def load_models() -> MetaData:
    """Import every model module, then return the metadata they registered their tables on.

    Returns:
        ``Base.metadata``, complete: the target of migrations and of the drift test.
    """
    for name in model_modules():
        importlib.import_module(name)
    return Base.metadata
