"""The gallery sharded over Ray actors against the single-process gallery, in one run.

For each shard count S: the same synthetic face-like templates enrolled into a single-process
``uniface.Gallery(shards=S)`` and into a ``uniface.ray.ShardedGallery`` of S actors on a local
Ray cluster; build time (bulk enrollment plus graph insertion), identify QPS and p50/p99 for
single queries (one caller, one at a time) and for batches, identity top-1 and recall@1 against
an exact f32 scan, memory (the process's RSS growth; per actor its RSS). Prints one JSON object.

The templates are those of ``uniface bench gallery`` (the same generator: identity centres and
noise vectors from one LCG stream, 4 samples per identity, centre + 0.55 × noise), so the
figures sit beside docs/PERFORMANCE.md's.

    python uniface-py/bench/ray_scaling.py --templates 1000000 --queries 1000 --shards 1,2,4 \\
        --ef 192 --json ray_scaling.json

Needs ``pip install "uniface[ray]"``. Long (about 20 minutes at 1 M on 2 cores); CI runs it at
20,000 templates (``--templates 20000 --queries 200``).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import sys
import tempfile
import time
from typing import Any

import numpy as np

import uniface

DIM = 128
A = np.uint64(6364136223846793005)
C = np.uint64(1442695040888963407)
SEED = np.uint64(0x9E3779B97F4A7C15)


def lcg_stream(count: int) -> np.ndarray:
    """The first ``count`` values of ``uniface bench gallery``'s LCG (s ← a·s + c mod 2^64,
    value = (s >> 40) / 2^24 − 0.5 in f32), computed in blocks by jumping ahead."""
    block = min(count, 1 << 20)
    mult = np.empty(block, np.uint64)
    add = np.empty(block, np.uint64)
    m, a = np.uint64(1), np.uint64(0)
    with np.errstate(over="ignore"):
        for j in range(block):  # s_{j+1} = m_j · s_0 + a_j
            m, a = m * A, a * A + C
            mult[j], add[j] = m, a
        out = np.empty(count, np.float32)
        s = SEED
        for start in range(0, count, block):
            n = min(block, count - start)
            states = mult[:n] * s + add[:n]
            out[start : start + n] = (states >> np.uint64(40)).astype(np.float32) / np.float32(
                1 << 24
            ) - np.float32(0.5)
            s = states[n - 1]
    return out


def unit_vectors(n: int) -> np.ndarray:
    v = lcg_stream(n * DIM).reshape(n, DIM)
    norms = np.sqrt((v * v).sum(axis=1, dtype=np.float32, keepdims=True))
    out: np.ndarray = v / norms
    return out


def synthetic(templates: int, queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(templates, probes, the identity of each probe): as ``uniface bench gallery`` makes them
    (the centres and the noise come from one stream; noise vector k is stream vector k + 7)."""
    stream = unit_vectors(templates + queries + 7)
    identities = max(templates // 4, 1)
    centres = stream[: templates // 4 + 1]
    noise = stream[7:]
    vectors = centres[np.arange(templates) // 4] + np.float32(0.55) * noise[:templates]
    ids = (np.arange(queries) * 7919) % identities
    probes = centres[ids] + np.float32(0.55) * noise[templates : templates + queries]
    return vectors.astype(np.float32), probes.astype(np.float32), ids


def exact_nearest(vectors: np.ndarray, probes: np.ndarray) -> np.ndarray:
    """Index of each probe's nearest template by a full f32 scan."""
    norms = (vectors * vectors).sum(axis=1)
    out = np.empty(len(probes), np.int64)
    for start in range(0, len(probes), 64):
        p = probes[start : start + 64]
        d = norms[None, :] - 2.0 * (p @ vectors.T)
        out[start : start + 64] = d.argmin(axis=1)
    return out


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def measure(
    gallery: Any,
    probes: np.ndarray,
    probe_ids: np.ndarray,
    exact_ids: np.ndarray,
    batch: int,
) -> dict[str, float]:
    """Single queries one at a time, then the same probes in batches."""
    lat = []
    top1 = recall = 0
    for p, identity, nearest in zip(probes, probe_ids, exact_ids):
        t = time.perf_counter()
        r = gallery.identify(p, k=1)
        lat.append(time.perf_counter() - t)
        best = r.candidates[0] if r.candidates else None
        top1 += best is not None and best.subject == f"i{identity}"
        recall += best is not None and best.template_id == nearest
    lat.sort()

    def pct(q: float) -> float:
        return lat[round((len(lat) - 1) * q)] * 1e3

    t = time.perf_counter()
    for start in range(0, len(probes), batch):
        gallery.identify_batch(probes[start : start + batch], k=1)
    batch_s = time.perf_counter() - t
    n = len(probes)
    return {
        "identity_top1": float(top1) / n,
        "recall_at_1": float(recall) / n,
        "qps_one_caller": n / sum(lat),
        "latency_ms_p50": pct(0.5),
        "latency_ms_p99": pct(0.99),
        "batch_size": batch,
        "qps_batches": n / batch_s,
    }


def build(gallery: Any, vectors: np.ndarray, chunk: int) -> tuple[list[int], float, float]:
    """Bulk enrollment in chunks, then every pending template into the graphs; the ids and
    (enroll seconds, index seconds)."""
    subjects = [f"i{i // 4}" for i in range(len(vectors))]
    ids: list[int] = []
    t = time.perf_counter()
    for start in range(0, len(vectors), chunk):
        end = start + chunk
        rows = vectors[start:end]
        if isinstance(gallery, uniface.Gallery):
            ids += gallery.enroll_many(subjects[start:end], list(rows))
        else:
            ids += gallery.enroll_many(subjects[start:end], rows)
    enrolled = time.perf_counter() - t
    t = time.perf_counter()
    gallery.index_pending()
    return ids, enrolled, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--templates", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--shards", default="1,2,4", help="shard counts, comma-separated")
    ap.add_argument("--ef", type=int, default=192, help="search expansion of every graph")
    ap.add_argument("--batch", type=int, default=100, help="probes per identify_batch call")
    ap.add_argument("--chunk", type=int, default=50_000, help="templates per enroll_many call")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="the Ray cluster's CPUs")
    ap.add_argument("--dir", help="where the galleries go (default: a temporary folder)")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()

    import ray

    from uniface.ray import ShardedGallery

    work = pathlib.Path(args.dir or tempfile.mkdtemp(prefix="ray-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    vectors, probes, probe_ids = synthetic(args.templates, args.queries)
    exact = exact_nearest(vectors, probes)
    print(f"data: {args.templates} templates, {args.queries} probes, exact scan in "
          f"{time.perf_counter() - t:.1f} s", file=sys.stderr)  # fmt: skip
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    runs = []
    for shards in [int(s) for s in args.shards.split(",")]:
        row: dict[str, Any] = {"shards": shards}
        # the single-process gallery
        before = rss_bytes()
        folder = work / f"single-{shards}"
        g = uniface.Gallery(folder, create=True, shards=shards, durability="async")
        g.set_expansion_search(args.ef)
        ids, enroll_s, index_s = build(g, vectors, args.chunk)
        tid = np.asarray(ids)
        row["single"] = {
            "enroll_s": enroll_s,
            "index_s": index_s,
            "build_s": enroll_s + index_s,
            "rss_growth_bytes": rss_bytes() - before,
            **measure(g, probes, probe_ids, tid[exact], args.batch),
        }
        g.close()
        del g
        shutil.rmtree(folder)
        print(f"single, {shards} shards: {row['single']}", file=sys.stderr)
        # the same on Ray actors
        folder = work / f"ray-{shards}"
        sg = ShardedGallery.create(folder, shards, durability="async", expansion_search=args.ef)
        ids, enroll_s, index_s = build(sg, vectors, args.chunk)
        tid = np.asarray(ids)
        info = [copies[0] for copies in sg.info()]
        row["ray"] = {
            "enroll_s": enroll_s,
            "index_s": index_s,
            "build_s": enroll_s + index_s,
            "actor_rss_bytes": [i["rss_bytes"] for i in info],
            "actor_templates": [i["templates"] for i in info],
            **measure(sg, probes, probe_ids, tid[exact], args.batch),
        }
        sg.close()
        shutil.rmtree(folder)
        s, r = row["single"], row["ray"]
        row["ray_over_single"] = {
            "build_s": r["build_s"] / s["build_s"],
            "qps_one_caller": r["qps_one_caller"] / s["qps_one_caller"],
            "qps_batches": r["qps_batches"] / s["qps_batches"],
            "latency_ms_p50": r["latency_ms_p50"] / s["latency_ms_p50"],
        }
        print(f"ray, {shards} shards: {row['ray']}", file=sys.stderr)
        runs.append(row)
    ray.shutdown()
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)
    out = {
        "templates": args.templates,
        "queries": args.queries,
        "ef": args.ef,
        "cpus": args.cpus,
        "ray": ray.__version__,
        "peak_rss_driver_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "runs": runs,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        pathlib.Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
