"""The `slow` marker is the fast target's only filter (`make test-fast` runs `-m "not slow"`),
so a misspelt marker must fail the run rather than quietly keep a slow test in the fast one.
The project's pytest settings (pyproject.toml) turn on --strict-markers and register `slow`;
these tests run pytest under those settings on a one-test file and watch what it does."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_pytest_on(tmp_path: Path, marker: str, *args: str) -> subprocess.CompletedProcess:
    """Pytest with the project's settings (and `args`) on a file holding one test marked
    `marker`."""
    test_file = tmp_path / "test_one.py"
    test_file.write_text(
        textwrap.dedent(
            f"""
            import pytest

            @pytest.mark.{marker}
            def test_one():
                pass
            """
        )
    )
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), *args, str(test_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_misspelt_marker_fails_the_run(tmp_path):
    result = run_pytest_on(tmp_path, "slwo")
    assert result.returncode != 0, result.stdout
    assert "'slwo' not found in `markers` configuration option" in result.stdout + result.stderr


def test_the_slow_marker_is_registered(tmp_path):
    result = run_pytest_on(tmp_path, "slow")
    assert result.returncode == 0, result.stdout + result.stderr


def test_not_slow_leaves_the_marked_test_out(tmp_path):
    result = run_pytest_on(tmp_path, "slow", "-m", "not slow")
    assert "1 deselected" in result.stdout, result.stdout + result.stderr
