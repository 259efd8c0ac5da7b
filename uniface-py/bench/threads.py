"""Throughput of `FaceAnalyzer.analyze_batch` from one and from two Python threads.

Each call runs on its own one-thread pool (`threads=1`), so two Python threads can only
overlap if the GIL is released while they work:

    python uniface-py/bench/threads.py --root ../shared/data/lfw --images 96 [--json]

Prints images per second for: one Python thread; two Python threads, each with half of the
images; and one call with a two-thread pool — and the ratios.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import uniface


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=pathlib.Path, required=True, help="LFW folder (one sub-folder per person)")
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    people = sorted(p for p in args.root.iterdir() if p.is_dir())
    paths = [sorted(p.glob("*.jpg"))[0] for p in people[: args.images]]
    images = [p.read_bytes() for p in paths]  # decoding is part of the work measured
    analyzer = uniface.FaceAnalyzer()
    analyzer.analyze_batch(images[:4], threads=1)  # warm-up

    def timed(f) -> float:  # type: ignore[no-untyped-def]
        runs = []
        for _ in range(args.runs):
            start = time.perf_counter()
            f()
            runs.append(time.perf_counter() - start)
        return statistics.median(runs)

    half = len(images) // 2
    one = timed(lambda: analyzer.analyze_batch(images, threads=1))

    def two_python_threads() -> None:
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda part: analyzer.analyze_batch(part, threads=1), [images[:half], images[half:]]))

    two = timed(two_python_threads)
    pool2 = timed(lambda: analyzer.analyze_batch(images, threads=2))
    n = len(images)
    out = {
        "images": n,
        "one_thread_images_per_s": n / one,
        "one_thread_ms_per_image": one / n * 1e3,
        "two_python_threads_images_per_s": n / two,
        "two_python_threads_speedup": one / two,
        "two_thread_pool_images_per_s": n / pool2,
        "two_thread_pool_speedup": one / pool2,
    }
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:34} {v:10.3f}" if isinstance(v, float) else f"{k:34} {v:10d}")


if __name__ == "__main__":
    main()
