import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.plugins.loop_guard import guard

PROJECT_ROOT = Path(__file__).resolve().parents[2]


async def blocking() -> None:
    """Block the loop the way a sync call inside a coroutine does."""
    time.sleep(0.3)  # noqa: ASYNC251 - the bug the guard exists to catch


async def yielding() -> None:
    """Wait as long, but give the loop back while waiting."""
    await asyncio.sleep(0.3)


# The guard is off for these tests themselves: they block on purpose and check `guard`.
@pytest.mark.loop_guard(threshold=None)
async def test_loop_guard_fails_a_coroutine_that_calls_time_sleep() -> None:
    """time.sleep(0.3) inside a coroutine fails, naming the blocking line."""
    with pytest.raises(pytest.fail.Exception) as failure:
        await guard(blocking, 0.1)()

    blocked = re.search(r"event loop blocked for (\d+\.\d+) s", str(failure.value))
    assert blocked is not None
    assert float(blocked.group(1)) >= 0.2
    assert "time.sleep(0.3)" in str(failure.value)


@pytest.mark.loop_guard(threshold=None)
async def test_loop_guard_passes_a_coroutine_that_awaits_asyncio_sleep() -> None:
    """Awaiting asyncio.sleep(0.3) lets the loop run, so nothing is reported."""
    result = await guard(yielding, 0.1)()

    assert result is None


@pytest.mark.loop_guard(threshold=None)
async def test_loop_guard_catches_a_block_between_two_awaits() -> None:
    """A block in the middle of a test that also awaits is caught."""

    async def mixed() -> None:
        await asyncio.sleep(0.05)
        time.sleep(0.25)  # noqa: ASYNC251 - the bug the guard exists to catch
        await asyncio.sleep(0.05)

    with pytest.raises(pytest.fail.Exception, match="1 stall"):
        await guard(mixed, 0.1)()


@pytest.mark.slow  # runs pytest in a subprocess
def test_loop_guard_plugin_fails_only_the_blocking_test(tmp_path: Path) -> None:
    """Through pytest itself: the blocking async test fails, the yielding one passes."""
    (tmp_path / "test_sample.py").write_text(
        "import asyncio, time\n\n"
        "async def test_blocks():\n    time.sleep(0.3)\n\n"
        "async def test_yields():\n    await asyncio.sleep(0.3)\n",
        encoding="utf-8",
    )
    command = [sys.executable, "-m", "pytest", "-p", "tests.plugins.loop_guard", "-q"]
    options = ["-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function"]

    result = subprocess.run(  # noqa: S603 - fixed argument list
        [*command, *options, "-p", "no:cacheprovider", "-W", "error", str(tmp_path)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 1 passed" in result.stdout
    assert "FAILED test_sample.py::test_blocks" in result.stdout
    assert "event loop blocked" in result.stdout
