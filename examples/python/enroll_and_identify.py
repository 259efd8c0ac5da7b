"""Enroll a folder of people, then identify a photo — UniFace from Python, step by step.

    pip install ./uniface-py tqdm
    python examples/python/enroll_and_identify.py PEOPLE_DIR PHOTO [--gallery DIR]

PEOPLE_DIR holds one sub-folder of photos per person (e.g. a few LFW people from
../shared/data/lfw). Run it as a script or paste the cells into a notebook.
"""

# %% Setup
from __future__ import annotations

import argparse
import pathlib
import tempfile

from tqdm import tqdm

import uniface

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("people", type=pathlib.Path, help="one sub-folder of photos per person")
parser.add_argument("photo", type=pathlib.Path, help="the photo to identify")
parser.add_argument("--gallery", type=pathlib.Path, default=None, help="gallery folder (default: a temporary one)")
parser.add_argument("--fpir", type=float, default=1e-2, help="target false-positive identification rate")
args = parser.parse_args()

# %% The analyzer: models are fetched and SHA-256-verified on first use
analyzer = uniface.FaceAnalyzer()

# %% Enroll every photo's largest face, with a progress bar
gallery_dir = args.gallery or pathlib.Path(tempfile.mkdtemp()) / "gallery"
photos = [(p.name, f) for p in sorted(args.people.iterdir()) if p.is_dir() for f in sorted(p.glob("*.jpg"))]
skipped = 0
with uniface.Gallery(gallery_dir, create=True, durability="group") as gallery:
    for person, path in tqdm(photos, desc="enrolling", unit="photo"):
        faces = analyzer.analyze(path)
        if not faces:
            skipped += 1
            continue
        largest = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        gallery.enroll(person, largest.embedding)
    print(f"{len(gallery)} templates of {len(gallery.subjects())} people in {gallery_dir} ({skipped} photos without a face)")

    # %% Identify the photo: ranked candidates and the open-set decision
    faces = analyzer.analyze(args.photo)
    if not faces:
        raise SystemExit(f"no face in {args.photo}")
    for face in faces:
        result = gallery.identify(face.embedding, k=3, fpir=args.fpir)
        print(f"face at {face.box}: {result.known or 'unknown'} (threshold {result.threshold:.3f})")
        for c in result.candidates:
            print(f"    {c.subject:<30} similarity {c.similarity:.3f}")
