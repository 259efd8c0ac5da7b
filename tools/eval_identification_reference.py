"""The comparison for `uniface eval identification`: face_recognition (dlib) embeddings and a
linear scan with numpy, on the same list and with the same protocol.

Per photo: face_recognition's default HOG detector (`--detector cnn` for dlib's MMOD CNN),
upsample 1, retried with the CNN at upsample 2 when nothing is found; the face nearest the
image centre; its 128-d encoding with the default 5-point landmarks. Each probe is compared with every enrolled
template (`face_recognition.face_distance`); the best distance and identity decide. Prints the
same figures as UniFace: rank-1 rate, FNIR at FPIR 1e-2 and 1e-3, counts.

    pip install dlib-bin face_recognition_models && pip install --no-deps face_recognition
    python tools/eval_identification_reference.py LIST ROOT [--jobs 2]
"""
import argparse
import json
import time
from multiprocessing import Pool

import numpy as np


DETECTOR = "hog"


def encode(path):
    import face_recognition

    img = face_recognition.load_image_file(path)
    h, w = img.shape[:2]
    for up, model in ((1, DETECTOR), (2, "cnn")):
        boxes = face_recognition.face_locations(img, number_of_times_to_upsample=up, model=model)
        if boxes:
            # (top, right, bottom, left): nearest the centre
            b = min(boxes, key=lambda b: ((b[1] + b[3]) / 2 - w / 2) ** 2 + ((b[0] + b[2]) / 2 - h / 2) ** 2)
            enc = face_recognition.face_encodings(img, known_face_locations=[b], model="small")
            return enc[0] if enc else None
    return None


def fnir_at_fpir(mated, nonmated, fpir):
    nm = np.sort(np.asarray(nonmated))
    allowed = int(np.floor(fpir * len(nm)))
    t = nm[allowed] if allowed < len(nm) else np.inf
    misses = sum(1 for hit, d in mated if not hit or d >= t)
    return misses / max(len(mated), 1), float(t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("list")
    ap.add_argument("root")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--detector", choices=["hog", "cnn"], default="hog")
    args = ap.parse_args()
    global DETECTOR
    DETECTOR = args.detector
    start = time.time()
    rows = [l.rstrip("\n").split("\t") for l in open(args.list)][1:]
    paths = [f"{args.root}/{p}" for _, _, p in rows]
    with Pool(args.jobs) as pool:
        encodings = pool.map(encode, paths, chunksize=8)
    gallery = [(ident, e) for (role, ident, _), e in zip(rows, encodings) if role == "gallery" and e is not None]
    names = [g[0] for g in gallery]
    matrix = np.stack([g[1] for g in gallery])
    import face_recognition

    mated, nonmated, rank1, no_face = [], [], 0, sum(e is None for e in encodings)
    for (role, ident, _), e in zip(rows, encodings):
        if role == "gallery":
            continue
        if e is None:
            best, name = np.inf, ""
        else:
            d = face_recognition.face_distance(matrix, e)
            i = int(np.argmin(d))
            best, name = float(d[i]), names[i]
        if role == "mated":
            hit = name == ident
            rank1 += hit
            mated.append((hit, best))
        else:
            nonmated.append(best)
    f2, t2 = fnir_at_fpir(mated, nonmated, 1e-2)
    f3, t3 = fnir_at_fpir(mated, nonmated, 1e-3)
    print(json.dumps({
        "enrolled": len(gallery), "mated_searches": len(mated), "nonmated_searches": len(nonmated),
        "no_face": no_face, "rank1": rank1 / max(len(mated), 1),
        "fnir_at_fpir_1e-2": f2, "threshold_at_fpir_1e-2": t2,
        "fnir_at_fpir_1e-3": f3, "threshold_at_fpir_1e-3": t3,
        "detector": args.detector, "seconds": time.time() - start,
    }))


if __name__ == "__main__":
    main()
