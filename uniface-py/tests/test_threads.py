"""Sharing one analyzer and one gallery between threads: results equal the single-threaded
ones, nothing deadlocks, and the GIL is released (other Python threads keep running)."""

from __future__ import annotations

import pathlib
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import uniface


def lfw_paths(data: pathlib.Path, n: int) -> list[pathlib.Path]:
    people = sorted(p for p in (data / "lfw").iterdir() if p.is_dir())[:n]
    return [sorted(p.glob("*.jpg"))[0] for p in people]


def test_eight_threads_share_one_analyzer(
    analyzer: uniface.FaceAnalyzer, data: pathlib.Path
) -> None:
    paths = lfw_paths(data, 12)
    expected = [[f.embedding for f in analyzer.analyze(p)] for p in paths]

    def work(i: int) -> list[list[np.ndarray]]:
        order = paths[i % len(paths) :] + paths[: i % len(paths)]
        got = [[f.embedding for f in analyzer.analyze(p)] for p in order]
        shift = i % len(paths)
        return got[len(paths) - shift :] + got[: len(paths) - shift]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(16)))
    for got in results:
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert len(g) == len(e)
            for a, b in zip(g, e):
                assert np.array_equal(a, b)
    batch = analyzer.analyze_batch(paths)
    for faces, e in zip(batch, expected):
        assert [f.embedding.tobytes() for f in faces] == [x.tobytes() for x in e]


def test_the_gil_is_released_during_analysis(
    analyzer: uniface.FaceAnalyzer, data: pathlib.Path
) -> None:
    """Counted, not timed: with the interpreter's switch interval set out of reach, a second
    thread can run only when the main thread gives the GIL up itself. It counts while the
    batch runs, so the batch gave it up; had it held the GIL, the count would be exactly 0
    when the call returns."""
    paths = lfw_paths(data, 6)
    ticks = 0
    go, stop = threading.Event(), threading.Event()

    def count() -> None:
        nonlocal ticks
        go.wait()
        while not stop.is_set():
            ticks += 1
            time.sleep(0)  # gives the GIL back at once, so the main thread can resume

    interval = sys.getswitchinterval()
    t = threading.Thread(target=count)
    t.start()
    try:
        sys.setswitchinterval(1000.0)
        go.set()
        analyzer.analyze_batch(paths)
        during = ticks
    finally:
        sys.setswitchinterval(interval)
        stop.set()
        t.join()
    assert during > 0


def test_threads_enroll_and_identify_in_one_gallery(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(64, 128)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    g = uniface.Gallery(tmp_path / "g", create=True, shards=2, durability="group")

    def enroll(i: int) -> int:
        return g.enroll(f"s{i}", centres[i])

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(enroll, range(64)))
        found = list(pool.map(lambda i: g.identify(centres[i], k=1, fmr=1e-3).known, range(64)))
    assert len(set(ids)) == 64
    assert found == [f"s{i}" for i in range(64)]
