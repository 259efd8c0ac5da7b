"""Batch embedding as a Ray Data stage (see the package's docstring)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import numpy as np
import ray.data

import uniface


#: The quality measures of the ``quality`` column, in its order (``Face.quality.measures``).
QUALITY_MEASURES = (
    "face_count", "inter_eye_distance", "face_height", "face_inside", "yaw", "pitch", "roll",
    "sharpness", "luminance_mean", "luminance_std", "under_exposure", "over_exposure",
    "dynamic_range",
)  # fmt: skip


class _Embedder:
    """One actor of the pool: a ``FaceAnalyzer`` built once, then batches of images."""

    def __init__(
        self,
        column: str,
        threads: Optional[int],
        quality: bool,
        one_face: bool,
        analyzer_options: dict[str, Any],
    ) -> None:
        self.column = column
        self.one_face = one_face
        self.threads = threads
        self.quality = quality
        self.analyzer = uniface.FaceAnalyzer(**analyzer_options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        images = list(batch[self.column])
        # bytes stay bytes, decoded images (read_images' arrays) stay arrays, the rest are paths
        inputs = [
            bytes(i) if isinstance(i, (bytes, bytearray, np.bytes_))
            else i if isinstance(i, np.ndarray)
            else str(i)
            for i in images
        ]  # fmt: skip
        faces, errors = self._analyze(inputs)
        # (the face's number in its image, the face), only the selected one with `one_face`
        kept = [
            [(n, f) for n, f in enumerate(found) if f.selected or not self.one_face]
            for found in faces
        ]
        cols: dict[str, list[Any]] = {
            "image": [], "face": [], "selected": [], "box": [], "landmarks": [],
            "embedding": [], "score": [], "quality": [], "error": [],
        }  # fmt: skip
        # the input's other columns (a label, an id) repeated on each of the image's rows
        clash = sorted(k for k in batch if k != self.column and k in cols)
        if clash:
            raise uniface.InvalidArgumentError(
                f"input columns {clash} have the names of output columns: rename them"
            )
        extra: dict[str, list[Any]] = {k: [] for k in batch if k != self.column}
        for index, (found, error) in enumerate(zip(kept, errors)):
            name = inputs[index] if isinstance(inputs[index], str) else f"#{index}"
            for k, v in extra.items():
                v.extend([batch[k][index]] * max(1, len(found) if error is None else 1))
            if error is not None or not found:
                # one row per image without a face, so that nothing vanishes from the output
                cols["image"].append(name)
                cols["face"].append(-1)
                cols["selected"].append(False)
                cols["box"].append(np.full(4, -1, np.int32))
                cols["landmarks"].append(np.full(10, np.nan, np.float32))
                cols["embedding"].append(np.full(128, np.nan, np.float32))
                cols["score"].append(np.nan)
                cols["quality"].append(np.full(len(QUALITY_MEASURES), np.nan, np.float32))
                cols["error"].append(error or "no face found")
                continue
            for n, f in found:
                cols["image"].append(name)
                cols["face"].append(n)
                cols["selected"].append(f.selected)
                cols["box"].append(np.asarray(f.box, np.int32))
                cols["landmarks"].append(np.asarray(f.landmarks, np.float32).reshape(10))
                cols["embedding"].append(np.asarray(f.embedding, np.float32))
                cols["score"].append(f.score)
                cols["quality"].append(_quality(f))
                cols["error"].append("")
        out: dict[str, Any] = dict(extra)
        # typed columns, also for an empty batch, so that every batch has one schema
        for k, kind in {
            "image": str, "face": np.int32, "selected": np.bool_, "score": np.float32,
            "error": str,
        }.items():  # fmt: skip
            out[k] = np.asarray(cols[k], dtype=kind)
        for k, (width, kind) in {
            "box": (4, np.int32), "landmarks": (10, np.float32), "embedding": (128, np.float32),
            "quality": (len(QUALITY_MEASURES), np.float32),
        }.items():  # fmt: skip
            out[k] = np.stack(cols[k]) if cols[k] else np.zeros((0, width), kind)
        return out

    def _analyze(self, inputs: list[Any]) -> tuple[list[list[Any]], list[Optional[str]]]:
        """Faces per image; an image that cannot be read gets an error, not the whole batch."""
        if not self.quality:
            try:
                found = self.analyzer.analyze_batch(inputs, threads=self.threads)
                return found, [None] * len(inputs)
            except Exception:  # noqa: BLE001 (one bad image: one by one to find it, keep the rest)
                pass
        def one(i: Any) -> tuple[list[Any], Optional[str]]:
            try:
                return self.analyzer.analyze(i, quality=self.quality), None
            except Exception as e:  # noqa: BLE001 (one image's failure is its row, not the job's)
                return [], f"{type(e).__name__}: {e}"

        # one image per thread (analyze releases the GIL), `threads` at a time
        with ThreadPoolExecutor(max_workers=self.threads or 1) as pool:
            done = list(pool.map(one, inputs))
        return [f for f, _ in done], [e for _, e in done]


def _quality(face: Any) -> np.ndarray:
    """The face's quality measures as 0–100 scalars in ``QUALITY_MEASURES`` order (NaN when
    not computed)."""
    out = np.full(len(QUALITY_MEASURES), np.nan, np.float32)
    if face.quality is not None:
        scalars = {m.name: m.scalar for m in face.quality.measures}
        out[:] = [scalars.get(name, np.nan) for name in QUALITY_MEASURES]
    return out


def embed_dataset(
    ds: ray.data.Dataset,
    *,
    column: str = "path",
    actors: int = 1,
    batch_size: int = 16,
    num_cpus: float = 1.0,
    threads: Optional[int] = None,
    quality: bool = False,
    one_face: bool = False,
    **analyzer_options: Any,
) -> ray.data.Dataset:
    """Every face of every image in ``ds`` as rows, computed on a pool of ``actors`` Ray actors
    that each load the models once (``FaceAnalyzer(**analyzer_options)``).

    ``column`` names the input: image paths (strings, on the actors' nodes) or encoded image
    bytes (``ray.data.read_binary_files`` gives a ``bytes`` column). Each output row is one
    face: the input's other columns (a label, an id) as they were, ``image`` (the path; for
    bytes ``#i``, the place in its batch, so keep a path or id column beside them), ``face``
    (its number in the image), ``selected`` (the face the analyzer's ``selection`` rule picks:
    "largest" unless ``selection=`` says otherwise), ``box`` (left, top, right, bottom),
    ``landmarks`` (5 points as x0, y0, … x4, y4),
    ``embedding`` (128 float32), ``score`` (detector), ``quality`` (with ``quality=True``: the
    face's quality measures as 0–100 scalars, in the order of ``QUALITY_MEASURES``; else NaN)
    and ``error`` (empty). An image with no face, or one that cannot be read, gives one row
    with ``face = -1``, NaN values and the reason in ``error`` — it never ends the job.
    ``one_face=True`` keeps only the selected face of each image (an enrollment photo's
    subject).

    Each actor reserves ``num_cpus`` CPUs and analyses a batch on ``threads`` threads (default:
    ``num_cpus`` rounded up). The dataset is lazy: nothing runs until it is consumed
    (``take_all``, ``iter_batches``, ``write_parquet``…).
    """
    if actors < 1:
        raise uniface.InvalidArgumentError(f"actors must be at least 1, got {actors}")
    if batch_size < 1:
        raise uniface.InvalidArgumentError(f"batch_size must be at least 1, got {batch_size}")
    if threads is None:
        threads = max(1, int(-(-num_cpus // 1)))
    models = analyzer_options.get("models_dir")
    if models is not None:
        analyzer_options["models_dir"] = os.fspath(models)
    return ds.map_batches(
        _Embedder,
        fn_constructor_kwargs={
            "column": column,
            "threads": threads,
            "quality": quality,
            "one_face": one_face,
            "analyzer_options": analyzer_options,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=num_cpus,
    )
