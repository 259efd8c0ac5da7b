"""Embed a folder of LFW photos with Ray Data, enroll them into a gallery sharded over Ray
actors, then identify held-out photos and strangers — UniFace scaled out with Ray.

    pip install "./uniface-py[ray]"
    python examples/python/ray_enroll_lfw.py ../shared/data/lfw --photos 1000 --shards 2 --actors 2

People with several photos are enrolled from all but their last photo, which is kept as a
probe; people with one photo are strangers (never enrolled) and should come out unknown. On a
cluster, start Ray first (``ray start --head`` / ``--address``) and give a gallery folder that
exists on every node (``--gallery``); by default a local Ray instance is started.
"""

# %% Setup
from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

import numpy as np
import ray

from uniface.ray import ShardedGallery, embed_dataset

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("root", type=pathlib.Path, help="one sub-folder of photos per person (LFW)")
parser.add_argument("--photos", type=int, default=1000, help="how many photos to use")
parser.add_argument("--shards", type=int, default=2, help="shards of the gallery (one actor each)")
parser.add_argument("--actors", type=int, default=2, help="embedding actors of the Ray Data stage")
parser.add_argument("--gallery", type=pathlib.Path, default=None, help="gallery folder (default: a temporary one)")
parser.add_argument("--fpir", type=float, default=1e-2, help="target false-positive identification rate")
args = parser.parse_args()

# %% Which photos: all but the last of each person with several are enrolled, the last is a
# probe; a person with one photo is a stranger
items: list[dict[str, str]] = []
for person in sorted(p for p in args.root.iterdir() if p.is_dir()):
    photos = sorted(person.glob("*.jpg"))
    roles = ["stranger"] if len(photos) == 1 else ["enroll"] * (len(photos) - 1) + ["probe"]
    items += [{"path": str(f), "person": person.name, "role": r} for f, r in zip(photos, roles)]
    if len(items) >= args.photos:
        break
items = items[: args.photos]

# %% Embed on a pool of actors (models loaded once per actor), the face nearest the centre of
# each photo (LFW's subject)
ray.init(include_dashboard=False, log_to_driver=False)
t = time.perf_counter()
ds = ray.data.from_items(items)
rows = embed_dataset(ds, actors=args.actors, one_face=True, selection="nearest_centre").take_all()
embed_s = time.perf_counter() - t
faces = [r for r in rows if r["face"] >= 0]
print(f"embedded {len(items)} photos in {embed_s:.1f} s ({len(items) / embed_s:.1f} photos/s, "
      f"{args.actors} actors); {len(rows) - len(faces)} without a face")  # fmt: skip

# %% Enroll into a gallery of `--shards` shard actors, routed by person
folder = args.gallery or pathlib.Path(tempfile.mkdtemp()) / "gallery"
enroll = [r for r in faces if r["role"] == "enroll"]
with ShardedGallery.create(folder, args.shards, durability="group") as gallery:
    t = time.perf_counter()
    gallery.enroll_many([r["person"] for r in enroll], np.stack([r["embedding"] for r in enroll]))
    print(f"enrolled {len(gallery)} templates of {len(gallery.subjects())} people in "
          f"{time.perf_counter() - t:.2f} s over {gallery.shards} shard actors in {folder}")  # fmt: skip

    # %% Identify the held-out photos and the strangers: one scatter-gather for the batch
    for role in ("probe", "stranger"):
        probes = [r for r in faces if r["role"] == role]
        if not probes:
            continue
        found = gallery.identify_batch(np.stack([r["embedding"] for r in probes]), k=1, fpir=args.fpir)
        if role == "probe":
            enrolled = set(gallery.subjects())
            mine = [(r, f) for r, f in zip(probes, found) if r["person"] in enrolled]
            right = sum(f.known == r["person"] for r, f in mine)
            print(f"held-out photos of enrolled people: {right} of {len(mine)} identified "
                  f"(FPIR {args.fpir:g}, threshold {found[0].threshold:.3f})")  # fmt: skip
        else:
            unknown = sum(f.known is None for f in found)
            print(f"strangers: {unknown} of {len(probes)} declared unknown")

    # %% Where each shard lives and what it holds
    for copies in gallery.info():
        i = copies[0]
        print(f"shard {i['shard']}: {i['templates']} templates, pid {i['pid']}, "
              f"{i['rss_bytes'] / 2**20:.0f} MiB")  # fmt: skip
    merged, _ = gallery.check()
    print(f"check: {'clean' if merged.clean else merged.problems}")
