"""The pieces a sharded deployment is built from, without Ray: one shard per process
(``Gallery(path, shard=i)``), the router, ``merge_candidates``, the change feed as bytes, and
results that pickle (how they cross process boundaries)."""

from __future__ import annotations

import pathlib
import pickle

import numpy as np
import pytest

import uniface


def unit_rows(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, 128)).astype(np.float32)
    out: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def test_one_shard_per_process_answers_what_the_whole_gallery_answers(tmp_path: pathlib.Path) -> None:
    vectors = unit_rows(400, 1)
    subjects = [f"s{i // 2}" for i in range(400)]
    whole = uniface.Gallery(tmp_path / "whole", create=True, shards=3)
    ids = whole.enroll_many(subjects, list(vectors))
    # the same gallery built shard by shard, each shard open on its own (its own lock)
    parts = [uniface.Gallery(tmp_path / "parts", create=True, shards=3, shard=i) for i in range(3)]
    router = uniface.ShardRouter(3)
    assert [p.local_shards for p in parts] == [[0], [1], [2]]
    assert all(p.shards == 3 for p in parts)
    part_ids = [0] * len(subjects)
    for shard, part in enumerate(parts):
        rows = [i for i, s in enumerate(subjects) if router.shard_of(s) == shard]
        got = part.enroll_many([subjects[i] for i in rows], [vectors[i] for i in rows])
        for i, tid in zip(rows, got):
            part_ids[i] = tid
    assert part_ids == ids, "ids are striped by shard: the same in both layouts"
    with pytest.raises(uniface.GalleryError, match="not open here"):
        parts[0].enroll(next(s for s in subjects if router.shard_of(s) == 1), vectors[0])
    probes = vectors[:30] + 0.2 * unit_rows(30, 2)
    for probe in probes:
        expect = whole.identify(probe, k=5)
        found = [c for p in parts for c in p.identify(probe, k=5).candidates]
        merged = uniface.merge_candidates(found, 5)
        assert merged == expect.candidates
    total = sum(len(p) for p in parts)
    assert total == len(whole)
    assert uniface.per_comparison_fmr(1e-2, total) == whole.fmr_for_fpir(1e-2)
    assert uniface.merge_candidates([], 10**11) == []


def test_the_change_feed_as_bytes_keeps_a_replica_equal(tmp_path: pathlib.Path) -> None:
    primary = uniface.Gallery(tmp_path / "p", create=True, shards=2)
    replica = uniface.Gallery(tmp_path / "r", create=True, shards=2)
    vectors = unit_rows(50, 3)
    primary.enroll_many([f"s{i}" for i in range(50)], list(vectors))
    primary.set_metadata("s1", b"card 7")
    primary.remove("s2")
    feed = primary.changes_since(replica.positions())
    assert all(isinstance(c, bytes) for c in feed) and len(feed) == 52
    bad = bytearray(feed[0])
    bad[-1] ^= 1
    with pytest.raises(uniface.InvalidArgumentError, match="checksum"):
        replica.apply_changes([bytes(bad)])
    assert replica.apply_changes(feed) == 52
    assert replica.apply_changes(feed) == 0
    assert replica.positions() == primary.positions()
    assert replica.subjects() == primary.subjects()
    subject = replica.get("s1")
    assert subject is not None and subject.metadata == b"card 7"
    primary.checkpoint()
    with pytest.raises(uniface.GalleryError, match="copy the gallery"):
        primary.changes_since([0, 0])


def test_results_cross_process_boundaries(tmp_path: pathlib.Path) -> None:
    g = uniface.Gallery(tmp_path / "g", create=True)
    vectors = unit_rows(5, 4)
    g.enroll_many([f"s{i}" for i in range(5)], list(vectors))
    r = g.identify(vectors[0], k=3)
    back = pickle.loads(pickle.dumps(r))
    assert back.candidates == r.candidates
    assert (back.known, back.threshold, back.fmr, back.fpir) == (r.known, r.threshold, r.fmr, r.fpir)
    report = pickle.loads(pickle.dumps(g.check()))
    assert report.clean and report.templates == 5
    d = g.verify("s1", vectors[1])
    assert d is not None
    back_d = pickle.loads(pickle.dumps(d))
    assert (back_d.distance, back_d.is_match, back_d.comparisons) == (d.distance, d.is_match, 1)
    router = pickle.loads(pickle.dumps(uniface.ShardRouter(7)))
    assert router.shards == 7 and router.shard_of("x") == uniface.ShardRouter(7).shard_of("x")
    g.close()
    reopened = uniface.Gallery(tmp_path / "g")
    assert pickle.loads(pickle.dumps(reopened.open_report)).clean
