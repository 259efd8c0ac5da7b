"""``uniface.ray.embed_dataset`` with 1 and 2 actors against ``FaceAnalyzer.analyze_batch`` in
one process, on the same photos in one run. Prints one JSON object.

    python uniface-py/bench/ray_embed.py --root ../shared/data/lfw --photos 1000 --json embed.json

Each configuration is timed from the first call to the last row (Ray's cluster is started
before; an actor pool's start and model loading are inside the figure, as a job pays them), and
the in-process analyzer is built before its timing starts (its model load is reported apart).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
from typing import Any

import uniface


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=pathlib.Path, required=True, help="a folder of folders of photos")
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16, help="photos per batch (both ways)")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    import ray

    from uniface.ray import embed_dataset

    photos = sorted(str(p) for p in args.root.glob("*/*.jpg"))[: args.photos]
    cpus = os.cpu_count() or 2
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    out: dict[str, Any] = {"photos": len(photos), "cpus": cpus, "batch": args.batch, "runs": []}

    t = time.perf_counter()
    analyzer = uniface.FaceAnalyzer()
    out["analyzer_load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    faces = 0
    for start in range(0, len(photos), args.batch):
        faces += sum(len(f) for f in analyzer.analyze_batch(photos[start : start + args.batch]))
    s = time.perf_counter() - t
    out["runs"].append({"how": f"analyze_batch, one process, {cpus} threads", "seconds": s,
                        "photos_per_s": len(photos) / s, "faces": faces})  # fmt: skip
    print(out["runs"][-1], file=sys.stderr)

    for actors in (1, 2):
        per = cpus / actors
        ds = ray.data.from_items([{"path": p} for p in photos])
        t = time.perf_counter()
        rows = embed_dataset(ds, actors=actors, batch_size=args.batch, num_cpus=per).take_all()
        s = time.perf_counter() - t
        found = sum(r["face"] >= 0 for r in rows)
        out["runs"].append({"how": f"embed_dataset, {actors} actor(s) of {per:g} CPUs", "seconds": s,
                            "photos_per_s": len(photos) / s, "faces": found})  # fmt: skip
        print(out["runs"][-1], file=sys.stderr)
    ray.shutdown()
    base = out["runs"][0]["photos_per_s"]
    for r in out["runs"]:
        r["vs_analyze_batch"] = r["photos_per_s"] / base
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        pathlib.Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
