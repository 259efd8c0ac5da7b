"""A small typed program against the stubs; `test_typing.py` runs `mypy --strict` on it."""

from __future__ import annotations

import pathlib
from typing import Optional

import numpy as np
import numpy.typing as npt

import uniface


def largest_embedding(
    analyzer: uniface.FaceAnalyzer, photo: pathlib.Path
) -> Optional[npt.NDArray[np.float32]]:
    faces: list[uniface.Face] = analyzer.analyze(photo)
    if not faces:
        return None
    best = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    return best.embedding


def who_is_it(gallery: uniface.Gallery, probe: npt.NDArray[np.float32]) -> str:
    result: uniface.Identification = gallery.identify(probe, k=3, fpir=1e-2)
    names = ", ".join(f"{c.subject} ({c.similarity:.2f})" for c in result.candidates)
    return f"{result.known or 'unknown'}: {names}"


def same_person(a: uniface.Template, b: npt.NDArray[np.float32]) -> bool:
    decision: uniface.Decision = uniface.verify(a, b, fmr=1e-4)
    return bool(decision)


def gate(analyzer: uniface.FaceAnalyzer, photo: pathlib.Path) -> list[str]:
    a: uniface.Assessment = analyzer.assess(photo, policy="verification")
    if a.quality is None:
        return a.reasons
    blamed = [m.name for m in a.quality.measures if m.reason is not None]
    live = a.liveness.score if a.liveness is not None else float("nan")
    return a.reasons + blamed + [f"{a.quality.yaw.raw:+.0f}", f"{live:.2f}"]


def own_table(
    analyzer: uniface.FaceAnalyzer, folder: pathlib.Path
) -> tuple[uniface.CalibrationTable, float]:
    descriptors, labels, names, skipped = uniface.eval.describe_folder(analyzer, folder)
    table = uniface.calibrate(descriptors, labels, fmrs=[1e-2], method=f"{len(names)} people")
    row: uniface.ThresholdRow = table.rows[0]
    k: uniface.eval.KFold = uniface.eval.k_fold([0.2, 0.9], [True, False], [0, 1])
    return table, row.threshold + k.accuracy_mean + len(skipped)


def round_trip(t: uniface.Template) -> uniface.Template:
    return uniface.Template.from_bytes(t.to_bytes()).converted("i8")


def scatter_gather(root: pathlib.Path, probe: npt.NDArray[np.float32], shards: int) -> Optional[str]:
    """One shard per process, merged as one gallery ranks."""
    parts = [uniface.Gallery(root / "s", create=True, shards=shards, shard=i) for i in range(shards)]
    router = uniface.ShardRouter(shards)
    parts[router.shard_of("someone")].enroll("someone", probe)
    found: list[uniface.Candidate] = [c for p in parts for c in p.identify(probe, k=3).candidates]
    best = uniface.merge_candidates(found, 3)
    fmr: float = uniface.per_comparison_fmr(1e-2, sum(len(p) for p in parts))
    feed: list[bytes] = parts[0].changes_since(parts[0].positions())
    print(fmr, len(feed), parts[0].local_shards, [f.selected for f in uniface.FaceAnalyzer().analyze(root)])
    return best[0].subject if best else None


def main(root: pathlib.Path) -> None:
    analyzer = uniface.FaceAnalyzer(upsample=1)
    try:
        emb = largest_embedding(analyzer, root / "photo.jpg")
    except FileNotFoundError:
        return
    except uniface.UniFaceError as e:
        print(f"failed: {e}")
        return
    if emb is None:
        return
    table, _ = own_table(analyzer, root / "people")
    with uniface.Gallery(root / "g", create=True, calibration=table) as g:
        g.enroll("someone", emb)
        print(who_is_it(g, emb), len(g))
        report: uniface.CheckReport = g.check()
        subject: Optional[uniface.Subject] = g.get("someone")
        print(report.clean, subject.templates if subject else [], gate(analyzer, root / "photo.jpg"))
    kek: bytes = uniface.generate_key()
    with uniface.Gallery(root / "sealed", create=True, key=kek) as sealed:
        sealed.enroll("someone", emb)
        key_id: Optional[str] = sealed.key_id
        print(sealed.encrypted, key_id)
        sealed.rotate_key(uniface.generate_key())
    print(same_person(round_trip(uniface.Template(emb)), emb))
    print(uniface.models.verify())
