"""The comparison for `uniface eval cluster`: dlib's own Chinese Whispers on the same
descriptors, and how far UniFace's Chinese Whispers agrees with it.

Reads the descriptor cache that `uniface eval cluster --cache FILE` wrote (one descriptor per
photo, exactly those UniFace clustered) and the labels it wrote with `--labels FILE`. Runs
`dlib.chinese_whispers_clustering(descriptors, 0.5)` as dlib's examples do, scores it against
the identity folders (pairwise and BCubed precision / recall / F, as UniFace does), and
measures agreement with UniFace's `chinese_whispers@distance_0.5_(dlib)` column: BCubed F and
pairwise F of one clustering taken as the truth of the other, and the share of faces whose
cluster is the same set of faces in both. Two runs of dlib itself (it seeds its generator the
same way each time) are compared too, after shuffling the input order, to show how much the
random order alone moves the result.

    pip install dlib-bin numpy
    uniface eval cluster --root ROOT --cache lfw.cache --labels lfw-labels.tsv
    python tools/cluster_reference.py lfw.cache lfw-labels.tsv
"""
import argparse
import collections
import time

import numpy as np


def scores(truth, predicted):
    cell = collections.Counter(zip(predicted, truth))
    clusters = collections.Counter(predicted)
    classes = collections.Counter(truth)
    n = len(truth)
    bp = sum(c * c / clusters[p] for (p, _), c in cell.items()) / n
    br = sum(c * c / classes[t] for (_, t), c in cell.items()) / n
    pairs = lambda m: m * (m - 1) / 2
    together = sum(pairs(c) for c in cell.values())
    clustered = sum(pairs(c) for c in clusters.values())
    same = sum(pairs(c) for c in classes.values())
    pp = together / clustered if clustered else 1.0
    pr = together / same if same else 1.0
    f = lambda p, r: 2 * p * r / (p + r) if p + r else 0.0
    return {"pairwise": (pp, pr, f(pp, pr)), "bcubed": (bp, br, f(bp, br)), "clusters": len(clusters)}


def same_sets(a, b):
    """Share of faces whose cluster holds exactly the same faces in both clusterings."""
    ga, gb = collections.defaultdict(set), collections.defaultdict(set)
    for i, (x, y) in enumerate(zip(a, b)):
        ga[x].add(i)
        gb[y].add(i)
    return sum(ga[x] == gb[y] for x, y in zip(a, b)) / len(a)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache")
    ap.add_argument("labels")
    ap.add_argument("--threshold", type=float, default=0.5)
    args = ap.parse_args()
    import dlib

    vectors = {}
    with open(args.cache) as f:
        next(f)
        for line in f:
            key, _, values = line.rstrip("\n").partition("\t")
            if values and values != "-":
                vectors[key] = [float(v) for v in values.split(",")]
    with open(args.labels) as f:
        header = next(f).rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in f]
    column = next(i for i, h in enumerate(header) if h.startswith("chinese_whispers@distance_0.5"))
    keys, truth, ours = [], [], []
    names = {}
    for r in rows:
        path = r[0]
        # the cache keys photos by their path under the collection root: ROOT/<identity>/<photo>
        key = "/".join(path.split("/")[-2:])
        keys.append(key)
        truth.append(names.setdefault(r[1], len(names)))
        ours.append(int(r[column]))
    descriptors = [dlib.vector(vectors[k]) for k in keys]
    start = time.time()
    theirs = list(dlib.chinese_whispers_clustering(descriptors, args.threshold))
    seconds = time.time() - start
    order = np.random.default_rng(1).permutation(len(keys))
    shuffled = list(dlib.chinese_whispers_clustering([descriptors[i] for i in order], args.threshold))
    again = [0] * len(keys)
    for pos, i in enumerate(order):
        again[i] = shuffled[pos]

    def show(name, s):
        p, b = s["pairwise"], s["bcubed"]
        print(f"| {name} | {s['clusters']} | {p[0]:.4f} / {p[1]:.4f} / {p[2]:.4f} | {b[0]:.4f} / {b[1]:.4f} / {b[2]:.4f} |")

    print(f"{len(keys)} faces of {len(names)} identities; threshold {args.threshold}; dlib took {seconds:.1f} s")
    print("| clustering | clusters | pairwise P / R / F | BCubed P / R / F |")
    print("| --- | ---: | --- | --- |")
    show("dlib chinese_whispers_clustering", scores(truth, theirs))
    show("dlib, input shuffled", scores(truth, again))
    show("UniFace chinese_whispers", scores(truth, ours))
    print()
    print("| agreement | BCubed F | pairwise F | faces in identical clusters |")
    print("| --- | ---: | ---: | ---: |")
    for name, a, b in [("UniFace vs dlib", ours, theirs), ("dlib vs dlib shuffled", again, theirs)]:
        s = scores(b, a)
        print(f"| {name} | {s['bcubed'][2]:.4f} | {s['pairwise'][2]:.4f} | {same_sets(a, b):.4f} |")


if __name__ == "__main__":
    main()
