import json
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.slow  # imports every module in a fresh interpreter
def test_importing_app_reads_no_config_and_does_no_io(tmp_path: Path) -> None:
    """Importing every app module reads no APP_ variable or .env and opens no connection."""
    (tmp_path / ".env").write_text("APP_PORT=1\n")
    database = tmp_path / "probe.db"
    env = {"APP_DB__URL": f"sqlite+aiosqlite:///{database}", "APP_PORT": "not-a-port"}

    completed = subprocess.run(  # noqa: S603 -- fixed argv, no shell
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert {"app.main", "app.core.config", "app.core.db", "app.__main__"} <= set(report["modules"])
    assert [name for name in report["read_vars"] if name.startswith("APP_") or name == "*"] == []
    assert report["events"] == []
    assert not database.exists()
