"""Reproduce the LFW figures of docs/ACCURACY.md through library calls only.

    python examples/python/reproduce_accuracy.py ../shared/data/lfw [--cache lfw_descriptors.tsv]

1. The View 2 protocol (10-fold accuracy, TAR at FAR 1e-2 and 1e-3, EER) for templates
   stored as f32, f16 and i8: ``uniface.eval.lfw``.
2. The calibration table shipped with the model, measured again from every pair of the
   7,701 photos: ``uniface.eval.describe_folder`` + ``uniface.calibrate``, compared row by row
   with ``uniface.CalibrationTable.default()``.

Both runs share one descriptor per photo (the face nearest the centre, as the table records);
with ``--cache`` the second run reads them back instead of computing them again (the first run
takes about 25 minutes on 2 cores; a cached run takes seconds).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import uniface


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=pathlib.Path, help="the LFW folder (holding pairs.txt)")
    parser.add_argument("--cache", type=pathlib.Path, help="descriptor cache file (reused)")
    args = parser.parse_args()
    analyzer = uniface.FaceAnalyzer()
    shipped = uniface.CalibrationTable.default()

    start = time.perf_counter()
    report = uniface.eval.lfw(analyzer, args.root, cache=args.cache, selection=shipped.selection)
    print(f"LFW View 2: {report.pairs} pairs, {report.images} photos, "
          f"{len(report.failed_images)} without a face ({time.perf_counter() - start:.1f} s)")
    for element in ("f32", "f16", "i8"):
        k = report.protocol(element)
        tar2, t2 = k.tar_at_far["1e-2"]
        tar3, t3 = k.tar_at_far["1e-3"]
        print(f"  {element}: accuracy {k.accuracy_mean:.4f} ± {k.accuracy_std:.4f}, "
              f"TAR@FAR=1e-2 {tar2:.4f} (threshold {t2:.4f}), "
              f"TAR@FAR=1e-3 {tar3:.4f} (threshold {t3:.4f}), EER {k.eer:.4f}")

    # every photo of the folder is a photo of the View 2 list: the same descriptors
    start = time.perf_counter()
    descriptors, labels, names, skipped = uniface.eval.describe_folder(
        analyzer, args.root, cache=args.cache, selection=shipped.selection
    )
    table = uniface.calibrate(descriptors, labels, selection=shipped.selection)
    print(f"calibration: {len(names)} identities, {len(labels)} photos, {len(skipped)} skipped "
          f"({time.perf_counter() - start:.1f} s)")
    same = True
    for mine, theirs in zip(table.rows, shipped.rows):
        agree = (mine.threshold == theirs.threshold
                 and mine.false_matches == theirs.false_matches
                 and mine.impostor_comparisons == theirs.impostor_comparisons)
        same = same and agree
        print(f"  FMR {mine.target_fmr:.0e}: threshold {mine.threshold:.4f} "
              f"(shipped {theirs.threshold:.4f}), {mine.false_matches} of "
              f"{mine.impostor_comparisons} impostor pairs, FNMR {mine.fnmr:.4f}"
              f"{'' if agree else '  <- differs'}")
    print("the shipped table is reproduced exactly" if same else "the tables differ")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
