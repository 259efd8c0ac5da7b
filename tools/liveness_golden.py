"""Golden liveness outputs from the reference PyTorch implementation.

Runs Minivision's own MiniFASNet definitions (from a checkout of
minivision-ai/Silent-Face-Anti-Spoofing at b6d5f04, passed as --reference) on the 80x80 crops
that `uniface liveness --dump-crops DIR` wrote, and prints JSON: for every crop its SHA-256
(over the BGR bytes the network sees) and each model's softmax. `tests/liveness.rs` checks
UniFace against the file this produces (tests/golden/liveness.json).

    python tools/liveness_golden.py --reference SFAS_CHECKOUT \
        --models ../shared/data/liveness/minifasnet --crops CROPS_DIR > tests/golden/liveness.json

Needs torch, numpy and Pillow (any recent version; made with torch 2.15.0 on CPU).
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

MODELS = {
    "2.7": ("2.7_80x80_MiniFASNetV2.pth", "MiniFASNetV2"),
    "4.0": ("4_0_0_80x80_MiniFASNetV1SE.pth", "MiniFASNetV1SE"),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--crops", required=True)
    args = ap.parse_args()
    sys.path.insert(0, args.reference)
    from src.model_lib import MiniFASNet as ref  # the reference definitions

    nets = {}
    for scale, (file, arch) in MODELS.items():
        state = torch.load(os.path.join(args.models, file), map_location="cpu", weights_only=False)
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
        net = getattr(ref, arch)(conv6_kernel=(5, 5))
        net.load_state_dict(state)
        net.eval()
        nets[scale] = net

    out = {"torch": torch.__version__, "crops": {}}
    for name in sorted(os.listdir(args.crops)):
        if not name.endswith(".png"):
            continue
        scale = name.rsplit("_", 1)[1][: -len(".png")]
        rgb = np.asarray(Image.open(os.path.join(args.crops, name)).convert("RGB"))
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        x = torch.from_numpy(bgr.transpose(2, 0, 1).copy()).float().unsqueeze(0)
        with torch.no_grad():
            p = F.softmax(nets[scale](x), dim=1)[0].tolist()
        out["crops"][name] = {
            "scale": float(scale),
            "bgr_sha256": hashlib.sha256(bgr.tobytes()).hexdigest(),
            "softmax": p,
        }
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
