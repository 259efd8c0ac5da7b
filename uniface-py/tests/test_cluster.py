"""Clustering embeddings by identity (``uniface.cluster``, ``uniface.Clusterer``) and possible
duplicate identities of a gallery (``Gallery.duplicates``, ``enroll_reporting_duplicates``),
on synthetic face-like embeddings: people are unit vectors, their faces samples around them."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import uniface


def people(n: int, per: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n, 128))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.standard_normal((n * per, 128))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    faces = np.repeat(centres, per, axis=0) + spread * noise
    return faces.astype(np.float32), np.repeat(np.arange(n), per)


@pytest.mark.parametrize("method", ["average_linkage", "chinese_whispers", "components"])
def test_each_method_finds_the_people(method: str) -> None:
    faces, truth = people(25, 4, 0.25, 1)
    labels = uniface.cluster(faces, threshold=0.7, method=method)
    assert labels.dtype == np.uint32 and labels.shape == (100,)
    # the same partition as the truth: equal labels exactly where the people are equal
    same_truth = truth[:, None] == truth[None, :]
    same_label = labels[:, None] == labels[None, :]
    assert (same_truth == same_label).all()
    # numbered in order of first appearance
    assert labels[0] == 0 and labels.max() == 24


def test_the_default_threshold_is_the_calibrations() -> None:
    c = uniface.Clusterer(people(3, 2, 0.1, 2)[0])
    assert c.threshold == pytest.approx(uniface.threshold_for_fmr(4e-4))
    assert uniface.Clusterer(people(3, 2, 0.1, 2)[0], fmr=1e-3).threshold == pytest.approx(
        uniface.threshold_for_fmr(1e-3)
    )


def test_faces_added_later_join_their_people() -> None:
    faces, truth = people(10, 5, 0.25, 3)
    first = np.concatenate([faces[i * 5 : i * 5 + 4] for i in range(10)])
    later = faces[4::5]
    c = uniface.Clusterer(first, threshold=0.7)
    assert c.clusters == 10 and len(c) == 40
    added = c.add(later)
    assert added.new_clusters == 0 and added.merges == []
    assert list(added.labels) == [c.labels[i * 4] for i in range(10)]
    # a new person starts a cluster of their own
    stranger = people(1, 1, 0.0, 99)[0]
    assert c.add(stranger).new_clusters == 1 and c.clusters == 11


def test_bad_input_raises_typed_errors() -> None:
    faces = people(2, 2, 0.1, 4)[0]
    with pytest.raises(uniface.InvalidArgumentError, match="method"):
        uniface.cluster(faces, method="kmeans")  # type: ignore[arg-type]
    with pytest.raises(uniface.InvalidArgumentError, match="neighbours"):
        uniface.cluster(faces, neighbours=0)
    bad = faces.copy()
    bad[1, 3] = np.nan
    with pytest.raises(uniface.InvalidArgumentError, match="not finite"):
        uniface.cluster(bad)
    with pytest.raises(uniface.UniFaceError):
        uniface.cluster(faces, fmr=2.0)
    assert uniface.cluster(np.zeros((0, 128), np.float32)).shape == (0,)


def test_duplicates_and_enrollment_reports(tmp_path: pathlib.Path) -> None:
    faces, truth = people(30, 4, 0.3, 5)
    keep = [i for i in range(len(truth)) if i % 4 != 3]
    g = uniface.Gallery(tmp_path / "g", create=True, shards=2)
    g.enroll_many([f"p{truth[i]:02d}" for i in keep], [faces[i] for i in keep])
    # person 29's fourth face comes in under another name
    g.enroll("alias", faces[119])
    found = g.duplicates(fmr=1e-4)
    assert [d.subjects for d in found] == [("alias", "p29")]
    d = found[0]
    assert d.distance < uniface.threshold_for_fmr(1e-4) and 0 < d.similarity <= 1
    # person 2's fourth face under a new name: enrolled, and reported as person 2
    tid, r = g.enroll_reporting_duplicates("another", faces[11], k=3)
    assert r.known == "p02" and all(c.subject != "another" for c in r.candidates)
    assert g.get("another") is not None and tid >= 0
