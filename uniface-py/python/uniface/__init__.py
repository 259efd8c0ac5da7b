"""UniFace: face detection, 5-point landmarks, aligned chips and 128-d embeddings (dlib's
public-domain models, re-implemented in Rust), calibrated 1:1 decisions, quality and liveness
checks, and a crash-safe 1:N gallery.

Every heavy call releases the GIL; objects can be shared between threads. Images are numpy
``H×W×3`` uint8 RGB arrays (``bgr=True`` for OpenCV's BGR), ``H×W`` grey, paths or bytes.
"""

from . import models
from ._uniface import (
    Candidate,
    Decision,
    Detection,
    Face,
    FaceAnalyzer,
    Gallery,
    GalleryError,
    GalleryLockedError,
    Identification,
    ImageError,
    InvalidArgumentError,
    ModelError,
    NoFaceError,
    OpenReport,
    Template,
    TemplateError,
    UniFaceError,
    __version__,
    threshold_for_fmr,
    verify,
)

__all__ = [
    "Candidate",
    "Decision",
    "Detection",
    "Face",
    "FaceAnalyzer",
    "Gallery",
    "GalleryError",
    "GalleryLockedError",
    "Identification",
    "ImageError",
    "InvalidArgumentError",
    "ModelError",
    "NoFaceError",
    "OpenReport",
    "Template",
    "TemplateError",
    "UniFaceError",
    "__version__",
    "models",
    "threshold_for_fmr",
    "verify",
]
