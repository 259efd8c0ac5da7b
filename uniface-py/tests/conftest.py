"""Shared fixtures: the real models (from the store, as the Rust tests use them), the photos in
``../shared/data`` (by path, never copied) and the ``uniface`` command-line tool built by
``cargo build --release``."""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED = pathlib.Path(os.environ.get("UNIFACE_SHARED_DIR", REPO.parent / "shared")).resolve()
DATA = SHARED / "data"

# liveness models: the shared copy when the pinned download URL is unreachable
if not os.environ.get("UNIFACE_LIVENESS_DIR"):
    os.environ["UNIFACE_LIVENESS_DIR"] = str(DATA / "liveness" / "minifasnet")

import uniface  # noqa: E402  (after the environment is set)


@pytest.fixture(scope="session")
def data() -> pathlib.Path:
    if not DATA.is_dir():
        pytest.fail(f"shared data not found at {DATA}; set UNIFACE_SHARED_DIR")
    return DATA


@pytest.fixture(scope="session")
def analyzer() -> uniface.FaceAnalyzer:
    return uniface.FaceAnalyzer()


@pytest.fixture(scope="session")
def cli() -> pathlib.Path:
    exe = os.environ.get("UNIFACE_CLI") or str(REPO / "target" / "release" / "uniface")
    if not pathlib.Path(exe).exists():
        found = shutil.which("uniface")
        if found is None:
            pytest.fail("the uniface CLI is not built: cargo build --release --bin uniface")
        exe = found
    return pathlib.Path(exe)
