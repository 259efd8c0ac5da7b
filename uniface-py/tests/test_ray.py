"""``uniface.ray`` on a real local Ray cluster (2 CPUs, no dashboard): the sharded gallery
answers exactly what a single-process gallery answers, loses no acknowledged enrollment when
shard actors are killed mid-stream, and its followers catch up from the change feed;
``embed_dataset`` gives the analyzer's own faces.

Without Ray installed the module is skipped, unless ``UNIFACE_REQUIRE_RAY=1`` (as CI sets it)."""

from __future__ import annotations

import os
import pathlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import uniface

if os.environ.get("UNIFACE_REQUIRE_RAY") == "1":
    import ray
else:
    ray = pytest.importorskip("ray")

from uniface.ray import QUALITY_MEASURES, ShardedGallery, ShardUnavailableError, embed_dataset  # noqa: E402

# Ray's own modules warn at import and shutdown (deprecations inside Ray): not ours to fix
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[None]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def unit_rows(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, 128)).astype(np.float32)
    out: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def same(a: uniface.Identification, b: uniface.Identification) -> bool:
    return (a.candidates, a.known, a.threshold, a.fmr, a.fpir) == (
        b.candidates, b.known, b.threshold, b.fmr, b.fpir,
    )  # fmt: skip


@pytest.mark.parametrize("shards", [1, 2, 4])
def test_the_sharded_gallery_answers_exactly_what_one_process_answers(
    tmp_path: pathlib.Path, shards: int
) -> None:
    # 3 templates per subject; under 4,096 templates per shard every search is an exact scan on
    # both sides, so the answers must be identical (graphs built by parallel insertion are not
    # deterministic: larger galleries are compared by identity top-1 in docs/SCALING.md)
    n = 6000
    identities = np.repeat(unit_rows(n // 3, 10), 3, axis=0)
    vectors = identities + 0.15 * unit_rows(n, 11)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    subjects = [f"person-{i // 3}" for i in range(n)]
    single = uniface.Gallery(tmp_path / "single", create=True, shards=shards)
    expected_ids = single.enroll_many(subjects, list(vectors))
    with ShardedGallery.create(tmp_path / "sharded", shards) as g:
        assert g.enroll_many(subjects, vectors) == expected_ids
        assert len(g) == len(single) == n
        assert g.subjects() == single.subjects()
        probes = np.concatenate([identities[:150:3] + 0.15 * unit_rows(50, 12), unit_rows(50, 13)])
        for k in (1, 5, 10**11):
            for rule in ({"fmr": 1e-4}, {"fmr": 1e-2}, {"fpir": 1e-2}):
                got = g.identify_batch(probes, k=k, **rule)
                want = single.identify_batch(list(probes), k=k, **rule)
                assert all(same(a, b) for a, b in zip(got, want)), (k, rule)
        assert sum(r.known is not None for r in got) >= 45, "genuine probes are found"
        assert same(g.identify(probes[0], k=3), single.identify(probes[0], k=3))
        d, e = g.verify("person-1", probes[1]), single.verify("person-1", probes[1])
        assert d is not None and e is not None
        assert (d.distance, d.threshold, d.is_match, d.comparisons) == (
            e.distance, e.threshold, e.is_match, e.comparisons,
        )  # fmt: skip
        assert g.verify("nobody", probes[1]) is None
        # changes go to the subject's shard (or the template's: ids are striped)
        assert g.remove("person-7") == single.remove("person-7") == 3
        assert g.remove_template(expected_ids[30]) and single.remove_template(expected_ids[30])
        g.set_metadata("person-8", b"passport 123")
        got_subject = g.get("person-8")
        assert got_subject is not None and got_subject[1] == b"passport 123"
        after = g.identify_batch(probes, k=5)
        assert all(same(a, b) for a, b in zip(after, single.identify_batch(list(probes), k=5)))
        merged, each = g.check()
        assert merged.clean and len(each) == shards and merged.templates == len(single)


def test_bad_input_is_refused_before_any_shard_commits(tmp_path: pathlib.Path) -> None:
    with ShardedGallery.create(tmp_path / "g", 2) as g:
        rows = unit_rows(8, 40)
        rows[5, 3] = np.nan
        with pytest.raises(uniface.TemplateError):
            g.enroll_many([f"s{i}" for i in range(8)], rows)
        with pytest.raises(uniface.InvalidArgumentError):
            g.enroll_many(["a", ""], unit_rows(2, 41))
        assert len(g) == 0, "nothing was committed on any shard"
        g.enroll_many(["a", "b"], unit_rows(2, 41))
        for bad in ({"fpir": 1.0}, {"fpir": 0.0}, {"k": -1}, {"k": 2**64}, {"fmr": 2.0}):
            with pytest.raises(uniface.InvalidArgumentError):
                g.identify_batch(unit_rows(2, 42), **bad)
        with pytest.raises(uniface.InvalidArgumentError, match="2-D"):
            g.identify_batch(unit_rows(1, 43)[0])
        with pytest.raises(uniface.InvalidArgumentError, match="128"):
            g.identify(np.zeros(127, np.float32))
        assert g.identify_batch(np.zeros((0, 128), np.float32)) == []
    # opening a folder without a gallery is an error naming it, not an empty gallery
    with pytest.raises(uniface.GalleryError, match="no gallery"):
        ShardedGallery.open(tmp_path / "nothing-here")


def test_killed_shard_actors_lose_no_acknowledged_enrollment(tmp_path: pathlib.Path) -> None:
    """Enrollments and identifications stream while shard actors are killed (Ray restarts
    them); every acknowledged enrollment must be there afterwards, and every query either
    answers (at most after one retry) or raises ShardUnavailableError."""
    g = ShardedGallery.create(tmp_path / "g", 2, call_timeout=60)
    acknowledged: dict[str, int] = {}
    unacknowledged: list[str] = []
    counts = {"queries": 0, "query_errors": 0}
    unexpected: list[BaseException] = []
    stop = threading.Event()
    pool = unit_rows(256, 20)

    def enroll() -> None:
        i = 0
        while not stop.is_set():
            subject = f"p{i}"
            try:
                acknowledged[subject] = g.enroll(subject, pool[i % 256])
            except ShardUnavailableError:
                unacknowledged.append(subject)
            except BaseException as e:  # noqa: BLE001 (any other exception fails the test)
                unexpected.append(e)
                return
            i += 1

    def query() -> None:
        while not stop.is_set():
            try:
                g.identify(pool[counts["queries"] % 256], k=3)
                counts["queries"] += 1
            except ShardUnavailableError:
                counts["query_errors"] += 1
            except BaseException as e:  # noqa: BLE001
                unexpected.append(e)
                return

    workers = [threading.Thread(target=enroll), threading.Thread(target=query)]
    for w in workers:
        w.start()
    pids_before = [copies[0]["pid"] for copies in g.info()]
    kills = 0
    for round_ in range(4):
        time.sleep(1.5)
        ray.kill(g.actor(round_ % 2), no_restart=False)
        kills += 1
    time.sleep(1.5)
    stop.set()
    for w in workers:
        w.join()
    assert not unexpected, unexpected
    info = [copies[0] for copies in g.info()]
    restarted = sum(i["restarted"] for i in info)
    assert restarted == 2 and all(i["pid"] != p for i, p in zip(info, pids_before))
    lost = [s for s, tid in acknowledged.items() if (got := g.get(s)) is None or tid not in got[0]]
    merged, _ = g.check()
    print(
        f"\nkill test: {kills} kills, {restarted} shard actors restarted (both), "
        f"{len(acknowledged)} acknowledged enrollments checked, {len(lost)} lost, "
        f"{len(unacknowledged)} unacknowledged (in flight at a kill), {counts['queries']} "
        f"queries answered, {g.retries} retried, {counts['query_errors']} raised "
        f"ShardUnavailableError"
    )
    assert lost == []
    assert merged.clean, merged.problems
    assert len(acknowledged) > 50 and counts["queries"] > 50
    # an enrollment whose acknowledgement was lost is there at most once
    for s in unacknowledged:
        got = g.get(s)
        assert got is None or len(got[0]) == 1
    g.close()


def test_a_follower_catches_up_from_the_change_feed_even_after_a_checkpoint(
    tmp_path: pathlib.Path,
) -> None:
    g = ShardedGallery.create(tmp_path / "g", 2, replicas=2, follow_interval=None)
    vectors = unit_rows(200, 30)
    g.enroll_many([f"s{i}" for i in range(200)], vectors)

    def copies_agree() -> None:
        for shard in range(2):
            writer, follower = g.actor(shard, 0), g.actor(shard, 1)
            assert ray.get(follower.positions.remote()) == ray.get(writer.positions.remote())
            a, _ = ray.get(writer.search.remote(vectors[:20], 5))
            b, _ = ray.get(follower.search.remote(vectors[:20], 5))
            assert a == b

    assert g.sync_replicas() == 200
    copies_agree()
    g.remove("s3")
    g.set_metadata("s4", b"m")
    assert g.sync_replicas() == 2
    copies_agree()
    # the writers fold their logs: the followers are behind a checkpoint and copy the shard
    g.enroll_many([f"t{i}" for i in range(20)], unit_rows(20, 31))
    g.checkpoint()
    g.enroll_many([f"u{i}" for i in range(20)], unit_rows(20, 32))
    g.sync_replicas()
    copies_agree()
    info = g.info()
    assert [c[1]["templates"] for c in info] == [c[0]["templates"] for c in info]
    assert sum(c[1]["templates"] for c in info) == 200 - 1 + 40
    # reads go round-robin over both copies and agree with the writer's
    assert g.identify(vectors[10]).known == "s10"
    assert g.identify(vectors[10]).known == "s10"
    g.close()


def test_an_interrupted_follower_copy_is_finished_or_undone(tmp_path: pathlib.Path) -> None:
    from uniface.ray._gallery import _COMPLETE, _recover_swap, _swap_names

    def state(files: dict[str, dict[str, str]]) -> pathlib.Path:
        root = tmp_path / str(len(list(tmp_path.iterdir())))
        for folder, content in files.items():
            (root / folder).mkdir(parents=True)
            for name, text in content.items():
                (root / folder / name).write_text(text)
        return root / "shard-000"

    # crashed between the two renames: the complete new copy takes the place
    folder = state({"shard-000.incoming": {"wal.log": "new", _COMPLETE: ""}, "shard-000.old": {"wal.log": "old"}})
    _recover_swap(folder)
    assert (folder / "wal.log").read_text() == "new" and not (folder / _COMPLETE).exists()
    assert not any(p.exists() for p in _swap_names(folder))
    # crashed while writing the new copy (not marked complete): the old one comes back
    folder = state({"shard-000.incoming": {"wal.log": "half"}, "shard-000.old": {"wal.log": "old"}})
    _recover_swap(folder)
    assert (folder / "wal.log").read_text() == "old"
    # crashed before the swap: the folder stays, leftovers go
    folder = state({"shard-000": {"wal.log": "cur"}, "shard-000.incoming": {"wal.log": "half"}})
    _recover_swap(folder)
    assert (folder / "wal.log").read_text() == "cur" and not any(p.exists() for p in _swap_names(folder))


def test_embed_dataset_gives_the_analyzers_faces(
    data: pathlib.Path, analyzer: uniface.FaceAnalyzer, tmp_path: pathlib.Path
) -> None:
    photos = sorted((data / "lfw").glob("*/*.jpg"))[:6]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    items: list[dict[str, Any]] = [{"path": str(p), "label": p.parent.name} for p in photos]
    items.append({"path": str(broken), "label": "broken"})
    rows = embed_dataset(ray.data.from_items(items), actors=1, batch_size=4).take_all()
    faces = [r for r in rows if r["face"] >= 0]
    assert {r["image"] for r in faces} == {str(p) for p in photos}
    for r in faces:
        want = analyzer.analyze(r["image"])[r["face"]]
        assert tuple(r["box"]) == want.box
        np.testing.assert_array_equal(r["embedding"], want.embedding)
        assert r["label"] == pathlib.Path(r["image"]).parent.name
    bad = [r for r in rows if r["image"] == str(broken)]
    assert len(bad) == 1 and bad[0]["face"] == -1 and "ImageError" in bad[0]["error"]
    # quality on request (one image per thread)
    rated = embed_dataset(ray.data.from_items(items[:2]), quality=True, threads=2).take_all()
    for r in (r for r in rated if r["face"] >= 0):
        want = analyzer.analyze(r["image"], quality=True)[r["face"]].quality
        assert want is not None
        assert [m.name for m in want.measures] == list(QUALITY_MEASURES)
        np.testing.assert_array_equal(r["quality"], [m.scalar for m in want.measures])
    assert all(np.isnan(r["quality"]).all() for r in rows)
    # one face per image: the analyzer's selected one (here the largest)
    ones = embed_dataset(ray.data.from_items(items[:3]), one_face=True).take_all()
    assert len(ones) == 3 and all(r["selected"] for r in ones)
    for r in ones:
        want = next(f for f in analyzer.analyze(r["image"]) if f.selected)
        np.testing.assert_array_equal(r["embedding"], want.embedding)
