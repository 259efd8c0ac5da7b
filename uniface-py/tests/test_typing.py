"""The stubs type-check a small usage example under `mypy --strict`."""

from __future__ import annotations

import pathlib
import subprocess
import sys


def test_typed_usage_passes_mypy_strict() -> None:
    here = pathlib.Path(__file__).parent
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(here / "typed_usage.py")],
        capture_output=True,
        text=True,
        cwd=here,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success" in r.stdout
