"""The analyzer from Python: equal to the Rust CLI bit for bit, every input form, zero-copy
outputs, quality and liveness."""

from __future__ import annotations

import json
import pathlib
import subprocess

import numpy as np
import pytest

import uniface


def golden_images(data: pathlib.Path) -> list[pathlib.Path]:
    golden = json.loads((data / "golden" / "golden.json").read_text())
    return [data / e["image"] for e in golden["images"]]


def test_embeddings_equal_the_cli_bit_for_bit_on_the_golden_images(
    analyzer: uniface.FaceAnalyzer, cli: pathlib.Path, data: pathlib.Path
) -> None:
    images = golden_images(data)
    assert len(images) == 50
    out = subprocess.run(
        [str(cli), "embed", "--json", *map(str, images)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == len(images)
    faces_compared = 0
    for path, row in zip(images, rows):
        faces = analyzer.analyze(path)
        assert len(faces) == len(row["faces"]), path
        for face, expected in zip(faces, row["faces"]):
            assert list(face.box) == expected["box"]
            assert np.float32(face.score) == np.float32(expected["score"])
            want = np.asarray(expected["embedding"], dtype=np.float32)
            # the same bits, not merely close
            assert np.array_equal(face.embedding.view(np.uint32), want.view(np.uint32)), path
            faces_compared += 1
    assert faces_compared >= 50


def test_path_bytes_and_arrays_give_the_same_faces(
    analyzer: uniface.FaceAnalyzer, data: pathlib.Path
) -> None:
    path = data / "lfw" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    by_path = analyzer.analyze(path)
    by_str = analyzer.analyze(str(path))
    by_bytes = analyzer.analyze(path.read_bytes())
    assert len(by_path) == 1
    for other in (by_str, by_bytes):
        assert np.array_equal(other[0].embedding, by_path[0].embedding)
    # a chip as an RGB array, its BGR copy, and a non-contiguous BGR view all agree
    chip = by_path[0].chip
    rgb = analyzer.embed(chip)
    bgr = analyzer.embed(np.ascontiguousarray(chip[:, :, ::-1]), bgr=True)
    view = analyzer.embed(chip[:, :, ::-1], bgr=True)
    assert rgb.shape == (1, 128) and rgb.dtype == np.float32
    assert np.array_equal(rgb, bgr) and np.array_equal(rgb, view)
    rgba = np.concatenate([chip, np.full(chip.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert np.array_equal(analyzer.embed(rgba), rgb)
    grey = chip.mean(axis=2).astype(np.uint8)
    assert analyzer.embed(grey).shape[1] == 128


def test_detect_landmarks_embed_and_analyze_agree(
    analyzer: uniface.FaceAnalyzer, data: pathlib.Path
) -> None:
    path = data / "lfw" / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg"
    faces = analyzer.analyze(path)
    dets = analyzer.detect(path)
    lms = analyzer.landmarks(path)
    embs = analyzer.embed(path)
    assert [d.box for d in dets] == [f.box for f in faces] == [d.box for d in lms]
    assert dets[0].landmarks is None
    lm = lms[0].landmarks
    assert lm is not None and lm.shape == (5, 2) and lm.dtype == np.float64
    assert np.array_equal(lm, faces[0].landmarks)
    assert np.array_equal(embs[0], faces[0].embedding)
    f = faces[0]
    assert f.chip.shape == (150, 150, 3) and f.chip.dtype == np.uint8
    assert f.embedding.shape == (128,) and f.embedding.dtype == np.float32
    assert np.all(np.isfinite(f.embedding)) and float(np.linalg.norm(f.embedding)) > 0.1
    left, top, right, bottom = f.box
    assert 0 <= left < right <= 250 and 0 <= top < bottom <= 250


@pytest.mark.parametrize("rule", ["largest", "nearest_centre", "highest_score"])
def test_each_image_has_one_selected_face_the_one_assess_uses(data: pathlib.Path, rule: str) -> None:
    a = uniface.FaceAnalyzer(selection=rule)  # type: ignore[arg-type]
    path = data / "photos" / "group_6faces_insightface_t1.jpg"
    faces = a.analyze(path)
    assert len(faces) == 6
    chosen = [f.box for f in faces if f.selected]
    assert chosen == [a.assess(path).box]
    if rule == "largest":
        batch = a.analyze_batch([path])[0]
        assert [f.selected for f in batch] == [f.selected for f in faces]


def test_outputs_are_zero_copy_read_only_views(
    analyzer: uniface.FaceAnalyzer, data: pathlib.Path
) -> None:
    face = analyzer.analyze(data / "lfw" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg")[0]
    for arr in (face.embedding, face.chip, face.landmarks):
        # numpy did not allocate: the buffer is the Rust vector, kept alive by `base`
        assert not arr.flags.owndata
        assert arr.base is not None
        assert not arr.flags.writeable
    # the same array every time (no copy per attribute access)
    assert face.embedding is face.embedding
    assert face.chip.ctypes.data == face.chip.ctypes.data
    with pytest.raises(ValueError):
        face.embedding[0] = 1.0


def test_quality_and_liveness_on_request(
    analyzer: uniface.FaceAnalyzer, data: pathlib.Path
) -> None:
    live = analyzer.analyze(
        data / "liveness" / "samples" / "image_T1.jpg", quality=True, liveness=True
    )
    assert live[0].quality is not None and live[0].liveness is not None
    assert live[0].liveness.is_live is True and bool(live[0].liveness)
    assert isinstance(live[0].quality, uniface.QualityReport)
    assert live[0].quality.sharpness.name == "sharpness"
    assert 0 <= live[0].quality.sharpness.scalar <= 100
    assert len(live[0].quality.measures) == 13 and len(live[0].liveness.per_model) == 2
    attack = analyzer.analyze(data / "liveness" / "samples" / "image_F1.jpg", liveness=True)
    assert attack[0].liveness is not None and attack[0].liveness.is_live is False
    plain = analyzer.analyze(data / "lfw" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg")
    assert plain[0].quality is None and plain[0].liveness is None
    gate = analyzer.assess(data / "photos" / "quality_blurred_face_blur.jpg")
    assert isinstance(gate, uniface.Assessment)
    assert gate.accepted is False and not gate
    assert "blurry" in gate.reasons
    # each refusal names its code and the measure that caused it
    assert [uniface.reason_name(c) for c in gate.reason_codes] == gate.reasons
    assert gate.quality is not None and gate.quality.sharpness.reason == "blurry"
    assert gate.box is not None and gate.faces_found >= 1


def test_bad_input_raises_typed_errors(analyzer: uniface.FaceAnalyzer, data: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError):
        analyzer.analyze(data / "no-such-photo.jpg")
    with pytest.raises(uniface.ImageError):
        analyzer.analyze(b"not an image")
    jpeg = (data / "lfw" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg").read_bytes()
    with pytest.raises(uniface.ImageError):
        analyzer.analyze(jpeg[:200])
    with pytest.raises(uniface.ImageError):
        analyzer.analyze(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(uniface.ImageError):
        analyzer.analyze(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(TypeError):
        analyzer.analyze(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(TypeError):
        analyzer.analyze(42)  # type: ignore[arg-type]
    with pytest.raises(uniface.InvalidArgumentError):
        analyzer.assess(jpeg, policy="lenient")  # type: ignore[arg-type]
    # an image without a face is an empty list, not an error
    assert analyzer.analyze(np.full((64, 64, 3), 128, np.uint8)) == []
    with pytest.raises(FileNotFoundError):
        uniface.FaceAnalyzer(models_dir=data / "no-such-models")


def test_every_error_derives_from_uniface_error_and_shadows_no_builtin() -> None:
    import builtins

    for name in (
        "ModelError",
        "ImageError",
        "NoFaceError",
        "TemplateError",
        "GalleryError",
        "GalleryLockedError",
        "InvalidArgumentError",
    ):
        cls = getattr(uniface, name)
        assert issubclass(cls, uniface.UniFaceError)
        assert not hasattr(builtins, name)
    assert issubclass(uniface.UniFaceError, Exception)
    assert not hasattr(builtins, "UniFaceError")


def test_models_verify_rehashes_the_store() -> None:
    d = uniface.models.verify()
    assert pathlib.Path(d).is_dir()
    assert pathlib.Path(uniface.models.fetch()) == pathlib.Path(d)
