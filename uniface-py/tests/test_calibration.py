"""Calibration and evaluation from Python: the shipped table, a table measured on the host's
own photos, a gallery deciding with it, and the pair protocol's metrics."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import uniface

PEOPLE = [
    "Abel_Pacheco",
    "Adam_Sandler",
    "Adrien_Brody",
    "Akhmed_Zakayev",
    "Amelia_Vega",
    "Ana_Guevara",
    "Abdullah_Gul",
]


@pytest.fixture(scope="module")
def folder(data: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A folder of identities made of links to the shared LFW photos (never copies)."""
    root = tmp_path_factory.mktemp("people")
    for name in PEOPLE:
        (root / name).mkdir()
        for p in sorted((data / "lfw" / name).glob("*.jpg"))[:3]:
            (root / name / p.name).symlink_to(p)
    return root


def test_the_shipped_table_round_trips_and_records_its_rule() -> None:
    t = uniface.CalibrationTable.default()
    assert t.selection == "nearest_centre" and t.images == 7701 and t.identities == 4281
    assert [r.target_fmr for r in t.rows] == [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
    assert t.threshold_for_fmr(1e-3) == uniface.threshold_for_fmr(1e-3)
    back = uniface.CalibrationTable.from_json(t.to_json())
    assert back == t
    d = t.decide(0.3, 1e-4)
    assert d.is_match and d.comparisons == 1
    with pytest.raises(uniface.InvalidArgumentError):
        uniface.CalibrationTable.from_json('{"rows": []}')


def test_a_table_from_the_hosts_photos_decides_for_a_gallery(
    analyzer: uniface.FaceAnalyzer, folder: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    descriptors, labels, names, skipped = uniface.eval.describe_folder(analyzer, folder)
    assert names == sorted(PEOPLE) and skipped == []
    n = len(labels)
    assert descriptors.shape == (n, 128) and descriptors.dtype == np.float32
    genuine = sum(c * (c - 1) // 2 for c in np.bincount(labels))
    table = uniface.calibrate(descriptors, labels, fmrs=[0.2, 0.1], method="seven LFW people")
    assert table.selection == "nearest_centre" and table.images == n
    assert table.rows[0].impostor_comparisons == n * (n - 1) // 2 - genuine
    assert table.rows[0].genuine_comparisons == genuine
    # 10 false matches are the least a target may rest on: a row is no exception
    assert table.min_fmr == pytest.approx(10 / table.rows[0].impostor_comparisons)
    with pytest.raises(uniface.InvalidArgumentError):
        table.threshold_for_fmr(1e-6)
    t01 = table.threshold_for_fmr(0.1)
    assert t01 != uniface.CalibrationTable.default().threshold_for_fmr(1e-2)
    # a gallery given the table decides with it, holding a subject's best of m to the target
    with uniface.Gallery(tmp_path / "g", create=True, calibration=table) as g:
        first = {name: int(np.flatnonzero(np.array(labels) == i)[0]) for i, name in enumerate(names)}
        for name, i in first.items():
            g.enroll(name, descriptors[i])
            g.enroll(name, descriptors[i + 1])
        probe = descriptors[first["Amelia_Vega"] + 2]
        d = g.verify("Amelia_Vega", probe, fmr=0.2)
        assert d is not None and d.comparisons == 2
        dist = min(
            float(np.linalg.norm(probe - descriptors[first["Amelia_Vega"] + k])) for k in (0, 1)
        )
        assert d.distance == pytest.approx(dist, abs=1e-5)
        expected = table.decide(d.distance, 0.2, comparisons=2)
        assert d.threshold == expected.threshold < table.threshold_for_fmr(0.2)
        assert d.threshold == table.threshold_for_fmr(1 - 0.8**0.5)
        assert d.is_match == expected.is_match
        # at 0.1 the best of two needs 0.051 per comparison: more than 189 impostor pairs hold
        with pytest.raises(uniface.InvalidArgumentError):
            g.verify("Amelia_Vega", probe, fmr=0.1)
    one = uniface.verify(descriptors[0], descriptors[1], 0.1, calibration=table)
    assert one.threshold == t01


def test_pair_metrics_by_hand() -> None:
    # the ten-pair example worked by hand in uniface_core::eval::pairs
    dist = [0.1, 0.3, 0.6, 0.4, 0.8, 0.2, 0.5, 0.36, 0.7, 0.9]
    same = [True, True, True, False, False, True, True, False, False, False]
    folds = [0] * 5 + [1] * 5
    k = uniface.eval.k_fold(dist, same, folds)
    assert k.fold_accuracy == [0.6, 0.8]
    assert k.accuracy_mean == pytest.approx(0.7) and k.accuracy_std == pytest.approx(0.1)
    assert k.eer == pytest.approx(0.4)
    tar, threshold = uniface.eval.tar_at_far(dist, same, 1e-2)
    assert tar == pytest.approx(0.6) and threshold == pytest.approx(0.36)
    assert uniface.eval.eer(dist, same) == pytest.approx(0.4)
    with pytest.raises(uniface.InvalidArgumentError):
        uniface.eval.k_fold(dist, same[:3], folds)
