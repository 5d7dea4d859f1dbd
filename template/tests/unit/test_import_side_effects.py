import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Runs in a fresh interpreter with an empty environment. It records every access to
# os.environ and, through an audit hook, every file opened inside the working directory
# and every socket or SQLite connection, while it imports each module of `app`.
PROBE = r"""
import json
import os
import pkgutil
import sys
from collections.abc import MutableMapping
from importlib import import_module
from pathlib import Path

here = str(Path.cwd())
read_vars = []
events = []


class RecordingEnviron(MutableMapping):
    def __init__(self, data):
        self._data = dict(data)

    def __getitem__(self, key):
        read_vars.append(key)
        return self._data[key]

    def __setitem__(self, key, value):
        self._data[key] = value

    def __delitem__(self, key):
        del self._data[key]

    def __iter__(self):
        read_vars.append("*")
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __contains__(self, key):
        read_vars.append(key)
        return key in self._data

    def copy(self):
        read_vars.append("*")
        return dict(self._data)


def audit(event, args):
    if event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        path = os.path.abspath(os.fsdecode(args[0]))
        if path.startswith(here):
            events.append(f"open {path}")
    elif event in {"socket.connect", "socket.bind", "sqlite3.connect"}:
        events.append(event)


os.environ = RecordingEnviron(os.environ)
sys.addaudithook(audit)
import app

modules = sorted(
    info.name
    for info in pkgutil.walk_packages(app.__path__, "app.")
    if ".__main__" not in info.name
)
modules.append("app.__main__")
for name in modules:
    import_module(name)
print(json.dumps({"modules": modules, "read_vars": read_vars, "events": events}))
"""


def run_probe(code: str, *, cwd: Path | None = None, env: dict[str, str] | None = None) -> Any:
    """Run ``code`` in a fresh interpreter and return the JSON it printed."""
    completed = subprocess.run(  # noqa: S603 -- fixed argv, no shell
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


@pytest.mark.slow  # imports every module in a fresh interpreter
def test_importing_app_reads_no_config_and_does_no_io(tmp_path: Path) -> None:
    """Importing every app module reads no APP_ variable or .env and opens no connection."""
    (tmp_path / ".env").write_text("APP_PORT=1\n")
    database = tmp_path / "probe.db"
    env = {"APP_DB__URL": f"sqlite+aiosqlite:///{database}", "APP_PORT": "not-a-port"}

    report = run_probe(PROBE, cwd=tmp_path, env=env)
    assert {"app.main", "app.core.config", "app.core.db", "app.__main__"} <= set(report["modules"])
    assert [name for name in report["read_vars"] if name.startswith("APP_") or name == "*"] == []
    assert report["events"] == []
    assert not database.exists()


# Which httpx modules a fresh interpreter holds after importing the entry point, and after a
# route module imports the dependency alias.
HTTPX_PROBE = """
import json, sys
import app.__main__
before = sorted(name for name in sys.modules if name.partition(".")[0] in {"httpx", "httpcore"})
from app.api.deps import HttpClientDep
print(json.dumps({"before": before, "after": "httpx" in sys.modules, "alias": repr(HttpClientDep)}))
"""


@pytest.mark.slow  # a fresh interpreter
def test_httpx_is_imported_only_when_a_route_asks_for_the_client() -> None:
    """Starting the service loads no httpx; `from app.api.deps import HttpClientDep` does."""
    report = run_probe(HTTPX_PROBE)

    assert report["before"] == []
    assert report["after"] is True
    assert "httpx.AsyncClient" in report["alias"]
    assert "get_http_client" in report["alias"]
