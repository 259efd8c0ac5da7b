"""Build the open-set identification list used by `uniface eval identification` on LFW.

Reads the folder-per-identity LFW layout (../shared/data/lfw), sorts identities by name and:
- every second identity that has at least two photos is *enrolled*: its first photo is a
  `gallery` entry, its other photos are `mated` probes;
- every other identity is *not enrolled*: its first photo is a `nonmated` probe.
Output: tab-separated `role identity path` (path relative to the root), with a header.

    python tools/make_identification_list.py ../shared/data/lfw > tests/data/lfw_identification.tsv
"""
import os
import sys


def main(root):
    people = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    print("role\tidentity\tpath")
    multi = 0
    for name in people:
        photos = sorted(f for f in os.listdir(os.path.join(root, name)) if f.endswith(".jpg"))
        if not photos:
            continue
        if len(photos) >= 2 and multi % 2 == 0:
            print(f"gallery\t{name}\t{name}/{photos[0]}")
            for p in photos[1:]:
                print(f"mated\t{name}\t{name}/{p}")
        else:
            print(f"nonmated\t{name}\t{name}/{photos[0]}")
        if len(photos) >= 2:
            multi += 1


if __name__ == "__main__":
    main(sys.argv[1])
