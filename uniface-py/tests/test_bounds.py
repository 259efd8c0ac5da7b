"""Every size a caller passes, at its extremes: a result or ``InvalidArgumentError`` — never a
``PanicException``, an abort or an allocation proportional to the value."""

from __future__ import annotations

import pathlib
from typing import Any, Callable

import numpy as np
import pytest

import uniface

EXTREMES = [0, 1, 2**31, 2**63 - 1, -1]


def outcome(call: Callable[[], Any]) -> str:
    """"ok" or "invalid"; any other exception (a panic included) fails the test."""
    try:
        call()
    except uniface.InvalidArgumentError:
        return "invalid"
    except BaseException as e:  # PanicException derives from BaseException
        pytest.fail(f"{type(e).__name__}: {e}")
    return "ok"


def photo(data: pathlib.Path) -> pathlib.Path:
    return data / "photos" / "small_face_obama_small.jpg"


def test_analyzer_options(data: pathlib.Path) -> None:
    for name, valid in [
        ("upsample", {0: "ok", 1: "ok", 2**31: "ok", 2**63 - 1: "invalid", -1: "invalid"}),
        ("min_face_size", {0: "ok", 1: "ok", 2**31: "ok", 2**63 - 1: "invalid", -1: "invalid"}),
        (
            "max_canvas_pixels",
            {0: "invalid", 1: "invalid", 2**31: "ok", 2**63 - 1: "invalid", -1: "invalid"},
        ),
    ]:
        for v in EXTREMES:
            got = outcome(lambda: uniface.FaceAnalyzer(**{name: v}))
            assert got == valid[v], (name, v, got)
    # an upsample past any budget is clamped: the small photo's face is still found
    a = uniface.FaceAnalyzer(upsample=2**31)
    assert len(a.detect(photo(data))) == 1


def test_batch_threads(analyzer: uniface.FaceAnalyzer, data: pathlib.Path) -> None:
    expected = {0: "invalid", 1: "ok", 2**31: "invalid", 2**63 - 1: "invalid", -1: "invalid"}
    for v in EXTREMES:
        got = outcome(lambda: analyzer.analyze_batch([photo(data)], threads=v))
        assert got == expected[v], (v, got)


def test_gallery_sizes(tmp_path: pathlib.Path) -> None:
    expected = {0: "invalid", 1: "ok", 2**31: "invalid", 2**63 - 1: "invalid", -1: "invalid"}
    for i, v in enumerate(EXTREMES):
        got = outcome(lambda: uniface.Gallery(tmp_path / f"g{i}", create=True, shards=v).close())
        assert got == expected[v], ("shards", v, got)
    rng = np.random.default_rng(7)
    with uniface.Gallery(tmp_path / "k", create=True, shards=2) as g:
        for s in range(5):
            v = rng.standard_normal(128).astype(np.float32)
            g.enroll(f"s{s}", uniface.Template(v / np.linalg.norm(v) * 0.6))
        probe = uniface.Template(np.full(128, 0.05, dtype=np.float32))
        expected = {0: "ok", 1: "ok", 2**31: "ok", 2**63 - 1: "ok", -1: "invalid"}
        for v in EXTREMES:
            assert outcome(lambda: g.identify(probe, k=v)) == expected[v], ("k", v)
            assert outcome(lambda: g.identify_batch([probe], k=v)) == expected[v], ("k", v)
            assert outcome(lambda: g.index_pending(max_per_shard=v)) == expected[v], v
        # k is clamped to the gallery's size, not allocated
        assert len(g.identify(probe, k=2**63 - 1).candidates) == 5
    for w in [-1.0, float("nan"), 1e300]:
        assert outcome(lambda: uniface.Gallery(tmp_path / "k", wait_lock=w)) == "invalid"


def test_pixel_arrays(analyzer: uniface.FaceAnalyzer) -> None:
    # empty and degenerate arrays are typed errors (ImageError), not panics
    for shape in [(0, 0, 3), (1, 0, 3), (0, 5), (1, 1, 3), (1, 1), (3, 2000, 4)]:
        a = np.zeros(shape, dtype=np.uint8)
        try:
            analyzer.detect(a)
        except uniface.UniFaceError:
            pass
