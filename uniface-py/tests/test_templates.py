"""Templates, calibrated decisions, and the gallery from Python."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import uniface


@pytest.fixture(scope="module")
def people(analyzer: uniface.FaceAnalyzer, data: pathlib.Path) -> dict[str, list[np.ndarray]]:
    """Embeddings of a few LFW people with several photos each."""
    names = {
        "Abel_Pacheco": 3,
        "Akhmed_Zakayev": 3,
        "Amelia_Vega": 4,
        "Ana_Guevara": 3,
    }
    out: dict[str, list[np.ndarray]] = {}
    for name, n in names.items():
        paths = sorted((data / "lfw" / name).glob("*.jpg"))[:n]
        assert len(paths) == n, name
        out[name] = [faces[0].embedding for faces in map(analyzer.analyze, paths)]
    return out


def test_templates_round_trip_in_every_storage(people: dict[str, list[np.ndarray]]) -> None:
    e = people["Abel_Pacheco"][0]
    t = uniface.Template(e)
    assert t.element == "f32" and t.dimension == 128
    assert t.model_id.startswith("dlib")
    assert np.array_equal(t.vector, e)
    back = uniface.Template.from_bytes(t.to_bytes())
    assert back == t
    for element in ("f16", "i8"):
        q = uniface.Template(e, element=element)  # type: ignore[arg-type]
        assert q.element == element
        assert uniface.Template.from_bytes(q.to_bytes()) == q
        assert float(np.max(np.abs(q.vector - e))) < 0.01
        assert t.converted(element).to_bytes() == q.to_bytes()  # type: ignore[arg-type]


def test_damaged_or_invalid_templates_raise(people: dict[str, list[np.ndarray]]) -> None:
    raw = bytearray(uniface.Template(people["Abel_Pacheco"][0]).to_bytes())
    raw[20] ^= 0x01
    with pytest.raises(uniface.TemplateError):
        uniface.Template.from_bytes(bytes(raw))
    with pytest.raises(uniface.TemplateError):
        uniface.Template.from_bytes(b"")
    bad = people["Abel_Pacheco"][0].copy()
    bad[3] = np.nan
    with pytest.raises(uniface.TemplateError, match="not finite"):
        uniface.Template(bad)
    with pytest.raises(uniface.InvalidArgumentError):
        uniface.Template(np.zeros(64, np.float32))
    with pytest.raises(uniface.InvalidArgumentError):
        uniface.Template(people["Abel_Pacheco"][0], element="f64")  # type: ignore[arg-type]
    with pytest.raises(uniface.InvalidArgumentError):
        uniface.threshold_for_fmr(0.0)


def test_verify_is_calibrated(people: dict[str, list[np.ndarray]]) -> None:
    a, b = people["Abel_Pacheco"][:2]
    same = uniface.verify(a, b, fmr=1e-3)
    assert same and same.is_match
    assert same.threshold == pytest.approx(uniface.threshold_for_fmr(1e-3))
    assert same.similarity == pytest.approx(1 - same.distance / 2)
    other = uniface.verify(a, people["Amelia_Vega"][0], fmr=1e-3)
    assert not other
    # stricter targets lower the threshold
    assert uniface.threshold_for_fmr(1e-5) < uniface.threshold_for_fmr(1e-3)
    # templates and arrays are interchangeable
    assert uniface.verify(uniface.Template(a), b).distance == pytest.approx(
        uniface.Template(a).distance(b)
    )


def test_gallery_enroll_identify_verify_remove_and_reopen(
    people: dict[str, list[np.ndarray]], tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "people.gallery"
    with pytest.raises((uniface.GalleryError, FileNotFoundError)):
        uniface.Gallery(path)
    with uniface.Gallery(path, create=True, shards=2, durability="group") as g:
        for name, embs in people.items():
            if name != "Ana_Guevara":
                for e in embs[:-1]:
                    g.enroll(name, e)
        assert len(g) == sum(len(e) - 1 for n, e in people.items() if n != "Ana_Guevara")
        assert g.subjects() == ["Abel_Pacheco", "Akhmed_Zakayev", "Amelia_Vega"]
        r = g.identify(people["Amelia_Vega"][-1], k=3, fmr=1e-3)
        assert r.known == "Amelia_Vega"
        assert r.candidates[0].subject == "Amelia_Vega"
        assert len(r.candidates) == 3
        assert r.candidates[0].distance <= r.candidates[1].distance
        stranger = g.identify(people["Ana_Guevara"][0], fpir=1e-2)
        assert stranger.known is None
        assert stranger.fpir == 1e-2 and stranger.fmr < 1e-2
        d = g.verify("Abel_Pacheco", people["Abel_Pacheco"][-1], fmr=1e-3)
        assert d is not None and d.is_match
        assert g.verify("nobody", people["Abel_Pacheco"][-1]) is None
        batch = g.identify_batch([e[-1] for e in people.values()], k=1, fmr=1e-3)
        assert [b.known for b in batch] == [
            "Abel_Pacheco",
            "Akhmed_Zakayev",
            "Amelia_Vega",
            None,
        ]
        assert g.remove("Akhmed_Zakayev") == 2
        report = g.check()
        assert isinstance(report, uniface.CheckReport)
        assert report.problems == [] and report.clean and report.subjects == 2
        with pytest.raises(uniface.InvalidArgumentError):
            g.enroll("", people["Abel_Pacheco"][0])
        with pytest.raises(uniface.InvalidArgumentError):
            g.enroll("x", np.zeros(64, np.float32))
        with pytest.raises(uniface.InvalidArgumentError):
            uniface.Gallery(path, durability="sometimes")  # type: ignore[arg-type]
    # acknowledged enrollments survive a reopen (the context manager flushed)
    g2 = uniface.Gallery(path)
    assert g2.subjects() == ["Abel_Pacheco", "Amelia_Vega"]
    assert g2.identify(people["Abel_Pacheco"][-1], fmr=1e-3).known == "Abel_Pacheco"
    info = g2.get("Abel_Pacheco")
    assert isinstance(info, uniface.Subject)
    assert info.id == "Abel_Pacheco" and len(info.templates) == 2 and info.metadata == b""
    report = g2.open_report
    assert report is not None and report.clean and report.messages == []
    # one writer per gallery; readers take no lock and cannot write
    with pytest.raises(uniface.GalleryLockedError):
        uniface.Gallery(path)
    reader = uniface.Gallery(path, read_only=True)
    assert reader.subjects() == ["Abel_Pacheco", "Amelia_Vega"]
    with pytest.raises(uniface.GalleryError):
        reader.enroll("x", people["Abel_Pacheco"][0])
    g2.close()
    with pytest.raises(uniface.GalleryError):
        g2.subjects()
    uniface.Gallery(path, wait_lock=1.0).close()


def test_sealed_templates_open_only_with_their_key_and_context(
    people: dict[str, list[np.ndarray]],
) -> None:
    key, other = uniface.generate_key(), uniface.generate_key()
    assert len(key) == 32 and key != other
    t = uniface.Template(people["Abel_Pacheco"][0], element="f16")
    sealed = t.seal(key, aad=b"row 7")
    assert len(sealed) == len(t.to_bytes()) + 52
    assert t.seal(key, aad=b"row 7") != sealed  # a fresh nonce every time
    assert uniface.Template.open_sealed(key, sealed, aad=b"row 7") == t
    # no 16-byte window of the stored values survives in the envelope
    plain = t.to_bytes()
    assert not any(plain[i : i + 16] in sealed for i in range(len(plain) - 256, len(plain) - 16))
    for bad_key, aad, data in [
        (other, b"row 7", sealed),
        (key, b"row 8", sealed),
        (key, b"row 7", sealed[:-1] + bytes([sealed[-1] ^ 1])),
        (key, b"row 7", plain),
    ]:
        with pytest.raises(uniface.CryptoError):
            uniface.Template.open_sealed(bad_key, data, aad=aad)
    with pytest.raises(uniface.CryptoError):
        t.seal(b"short key")


def test_an_encrypted_gallery_opens_only_with_its_key_and_erases_on_removal(
    tmp_path: pathlib.Path, people: dict[str, list[np.ndarray]]
) -> None:
    key, other = uniface.generate_key(), uniface.generate_key()
    path = tmp_path / "sealed"
    with uniface.Gallery(path, create=True, shards=2, key=key) as g:
        assert g.encrypted and g.key_id is not None and len(g.key_id) == 16
        for name, embeddings in people.items():
            g.enroll_many([name] * len(embeddings), embeddings)
        g.checkpoint()
        n = len(g)
    # no 16-byte window of any enrolled value is in any file
    windows = {
        e.astype("<f4").tobytes()[i : i + 16]
        for es in people.values()
        for e in es
        for i in range(0, 512 - 16, 4)
    }
    blobs = [f.read_bytes() for f in path.rglob("*") if f.is_file()]
    assert not any(b[i : i + 16] in windows for b in blobs for i in range(len(b) - 15))
    for wrong in [dict(), dict(key=other)]:
        with pytest.raises(uniface.CryptoError):
            uniface.Gallery(path, **wrong)  # type: ignore[arg-type]
    with pytest.raises(uniface.CryptoError):
        uniface.Gallery(tmp_path / "short", create=True, key=b"short")
    # the test of the test: the same scan finds the values in a plain gallery
    with uniface.Gallery(tmp_path / "plain", create=True, shards=2) as p:
        for name, embeddings in people.items():
            p.enroll_many([name] * len(embeddings), embeddings)
        p.checkpoint()
    plain = [f.read_bytes() for f in (tmp_path / "plain").rglob("*") if f.is_file()]
    assert any(b[i : i + 16] in windows for b in plain for i in range(len(b) - 15))
    key_file = tmp_path / "kek"
    new_key = uniface.generate_key()
    key_file.write_bytes(new_key)
    key_file.chmod(0o600)
    with uniface.Gallery(path, key=key) as g:
        assert len(g) == n
        probe = people["Abel_Pacheco"][1]
        assert g.identify(probe, k=1, fmr=1e-3).known == "Abel_Pacheco"
        g.rotate_key(new_key)
        assert g.remove("Abel_Pacheco") > 0
    with pytest.raises(uniface.CryptoError):
        uniface.Gallery(path, key=key)
    with uniface.Gallery(path, key_file=key_file) as g:
        assert g.get("Abel_Pacheco") is None
        assert g.identify(people["Abel_Pacheco"][1], k=1, fmr=1e-3).known != "Abel_Pacheco"
        assert g.check().clean
