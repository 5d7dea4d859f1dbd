"""A real PgBouncer in transaction mode for the slow tier, built from Debian's source.

Debian 12 packages PgBouncer 1.18, which cannot track prepared statements; keel's
``APP_DB__PGBOUNCER`` mode needs 1.21 or newer (``max_prepared_statements``). So the
tests build the release Debian 13 ships, from the source tarball in Debian's archive
(checked against the hash Debian's own source index gives), once per machine, into
``~/.cache/keel``. The build needs a C compiler, make, pkg-config and the libevent and
OpenSSL headers; `.ci/run` installs them. ``KEEL_PGBOUNCER`` may name a PgBouncer binary
(1.21 or newer) to use instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import PG_HOST, PG_PORT, PG_USER, postgres_url
from tests.server import free_port

VERSION = "1.24.1"
SOURCE_URL = f"https://deb.debian.org/debian/pool/main/p/pgbouncer/pgbouncer_{VERSION}.orig.tar.gz"
SOURCE_SHA256 = "da72a3aba13072876d055a3e58dd4aba4a5de4ed6148e73033185245598fd3e0"
"""From Debian 13's Sources index (package pgbouncer 1.24.1-1+deb13u2)."""

OVERRIDE_VARIABLE = "KEEL_PGBOUNCER"
MINIMUM = (1, 21)
UNPRIVILEGED = 65534
"""PgBouncer refuses to run as root; as root the tests run it as ``nobody``."""


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "keel" / f"pgbouncer-{VERSION}"


def version_of(binary: Path) -> tuple[int, ...]:
    """Return the version PgBouncer reports (``PgBouncer 1.24.1`` -> ``(1, 24, 1)``)."""
    output = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    found = re.search(r"PgBouncer (\d+)\.(\d+)(?:\.(\d+))?", output)
    assert found, f"{binary} --version printed {output!r}"
    return tuple(int(part) for part in found.groups() if part is not None)


def _build(into: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="keel-pgbouncer-build-"))
    try:
        archive = work / "source.tar.gz"
        with urllib.request.urlopen(SOURCE_URL, timeout=120) as response:
            archive.write_bytes(response.read())
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != SOURCE_SHA256:
            message = f"{SOURCE_URL} has sha256 {digest}, expected {SOURCE_SHA256}"
            raise RuntimeError(message)
        with tarfile.open(archive) as tar:
            tar.extractall(work, filter="data")
        source = work / f"pgbouncer-{VERSION}"
        staging = into.with_name(into.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        steps = (
            [
                "./configure",
                f"--prefix={staging}",
                *("--without-cares", "--without-pam", "--without-systemd", "--without-ldap"),
            ],
            ["make", f"-j{os.cpu_count() or 1}"],
            ["make", "install"],
        )
        for step in steps:
            result = subprocess.run(
                step, cwd=source, capture_output=True, text=True, check=False, timeout=600
            )
            if result.returncode != 0:
                message = (
                    f"building PgBouncer {VERSION}: `{' '.join(step)}` exited {result.returncode}"
                    " (it needs gcc, make, pkg-config, libevent-dev and libssl-dev)\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
                )
                raise RuntimeError(message)
        staging.rename(into)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def pgbouncer_binary() -> Path:
    """Return a PgBouncer 1.21+ binary: ``KEEL_PGBOUNCER``, else the cached build (made once)."""
    override = os.environ.get(OVERRIDE_VARIABLE)
    if override:
        binary = Path(override)
    else:
        home = _cache_dir()
        home.parent.mkdir(parents=True, exist_ok=True)
        binary = home / "bin" / "pgbouncer"
        # Test workers start at once; one builds while the others wait for it.
        with (home.parent / f"pgbouncer-{VERSION}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not binary.exists():
                _build(home)
    found = version_of(binary)
    assert found[:2] >= MINIMUM, f"{binary} is PgBouncer {found}; keel needs {MINIMUM} or newer"
    return binary


@dataclass(frozen=True)
class PgBouncer:
    """A running PgBouncer in front of the local PostgreSQL; every database name passes through."""

    port: int

    def url(self, database: str, *, user: str = PG_USER) -> str:
        """Return the SQLAlchemy URL of ``database`` through this PgBouncer."""
        return postgres_url(database, port=self.port, user=user)


@contextlib.contextmanager
def running_pgbouncer(
    *,
    max_prepared_statements: int = 200,
    default_pool_size: int = 10,
    port: int | None = None,
    users: tuple[str, ...] = (),
) -> Iterator[PgBouncer]:
    """Start PgBouncer in transaction mode on a free port; stop it on the way out.

    Args:
        max_prepared_statements: 0 behaves as PgBouncer before 1.21 did: prepared
            statements are not tracked across server connections.
        default_pool_size: Server connections per database and user.
        port: Where to listen (a free port when omitted), e.g. to restart on the same one.
        users: Roles besides the superuser that may log in (trust authentication).

    Yields:
        The running PgBouncer.
    """
    # The binary, the config and the log must be reachable for `nobody`, which root's
    # home (the cache) and pytest's 0700 temp folders are not.
    root = Path(tempfile.mkdtemp(prefix="keel-pgbouncer-"))
    root.chmod(0o777)
    binary = root / "pgbouncer"
    shutil.copy2(pgbouncer_binary(), binary)
    port = port or free_port()
    log = root / "pgbouncer.log"
    (root / "users.txt").write_text("".join(f'"{user}" ""\n' for user in (PG_USER, *users)))
    config = root / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = host={PG_HOST} port={PG_PORT}\n"
        "[pgbouncer]\n"
        f"listen_addr = {PG_HOST}\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {root / 'users.txt'}\n"
        "pool_mode = transaction\n"
        f"max_prepared_statements = {max_prepared_statements}\n"
        f"default_pool_size = {default_pool_size}\n"
        "max_client_conn = 1000\n"
        f"logfile = {log}\n"
    )
    for path in root.iterdir():
        path.chmod(0o755 if path == binary else 0o644)
    command = [str(binary), str(config)]
    if os.geteuid() == 0:
        command = [
            *("setpriv", f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups"),
            *command,
        ]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection((PG_HOST, port), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                output = log.read_text() if log.exists() else ""
                message = f"PgBouncer did not start (exit {process.poll()}):\n{output}"
                raise RuntimeError(message)
            time.sleep(0.05)
        yield PgBouncer(port=port)
    finally:
        process.send_signal(signal.SIGINT)  # PgBouncer's immediate shutdown
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)
