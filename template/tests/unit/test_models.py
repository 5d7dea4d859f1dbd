import sys
from pathlib import Path

import pytest

import app.models
from app.core.db import Base
from app.models import load_models, model_modules

PROBE = "app.models.probe_models"


def test_load_models_imports_every_module_of_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module dropped into app/models is imported without being listed anywhere."""
    (tmp_path / "probe_models.py").write_text("IMPORTED = True\n", encoding="utf-8")
    monkeypatch.setattr(app.models, "__path__", [*app.models.__path__, str(tmp_path)])
    try:
        assert PROBE in model_modules()

        metadata = load_models()

        assert metadata is Base.metadata
        assert sys.modules[PROBE].IMPORTED is True
    finally:
        sys.modules.pop(PROBE, None)
