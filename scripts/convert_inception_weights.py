#!/usr/bin/env python3
"""Converts pytorch-fid's FID Inception weights to the safetensors file that
`vilau eval fid --inception` loads (docs/evaluation.md, FID).

The input is pytorch-fid's public pt_inception-2015-12-05-6726825d.pth, the TF 2015-12-05
Inception graph ported to PyTorch (the weights FID is defined with). Every tensor keeps its
pytorch-fid state-dict name (Conv2d_1a_3x3.conv.weight, Mixed_5b.branch1x1.bn.running_var,
...) and is stored as F32. The 1008-way classifier (fc.*) is left out, since FID reads the
pool3 features before it, and so are BatchNorm's num_batches_tracked counters.

    python3 scripts/convert_inception_weights.py --out pt_inception-2015-12-05.safetensors
    python3 scripts/convert_inception_weights.py --input pt_inception-2015-12-05-6726825d.pth \\
        --out pt_inception-2015-12-05.safetensors

Without --input the file is downloaded from FID_WEIGHTS_URL. Needs only torch.
"""
import argparse
import ctypes
import hashlib
import json
import os
import sys
import tempfile

import torch

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
# torch.hub's convention: the file name carries the first hex digits of its SHA-256.
EXPECTED_SHA256_PREFIX = "6726825d"
# fid_inception_v3() up to pool3: 94 BasicConv2d blocks of 5 tensors each.
EXPECTED_TENSORS = 470


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_safetensors(path, tensors, metadata):
    """The format by hand (8-byte header length, JSON header, raw little-endian data), so
    that nothing but torch is needed; names sorted, so the output is reproducible."""
    header, offset = {"__metadata__": metadata}, 0
    for name in sorted(tensors):
        size = tensors[name].numel() * tensors[name].element_size()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    partial = path + ".partial"
    with open(partial, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for name in sorted(tensors):
            t = tensors[name]
            f.write(ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()))
    os.replace(partial, path)


def convert(source, out, check_hash=True):
    digest = sha256_of(source)
    if check_hash and not digest.startswith(EXPECTED_SHA256_PREFIX):
        sys.exit(f"{source}: SHA-256 {digest} does not start with {EXPECTED_SHA256_PREFIX}; "
                 "not pytorch-fid's pt_inception-2015-12-05 file")
    state = torch.load(source, map_location="cpu", weights_only=True)
    tensors = {name: t.detach().to(torch.float32).contiguous() for name, t in state.items()
               if not name.startswith("fc.") and not name.endswith("num_batches_tracked")}
    if len(tensors) != EXPECTED_TENSORS or "Conv2d_1a_3x3.conv.weight" not in tensors:
        sys.exit(f"{source}: expected {EXPECTED_TENSORS} Inception tensors named as in "
                 f"pytorch-fid, found {len(tensors)}")
    write_safetensors(out, tensors, {"format": "pt", "source": FID_WEIGHTS_URL, "sha256": digest})
    count = sum(t.numel() for t in tensors.values())
    print(f"wrote {out}: {len(tensors)} tensors, {count} values")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", help="pt_inception-2015-12-05-6726825d.pth (default: download)")
    parser.add_argument("--out", required=True, help="safetensors file to write")
    parser.add_argument("--no-hash-check", action="store_true",
                        help="accept an --input whose SHA-256 differs (a re-saved copy)")
    args = parser.parse_args()
    if args.input:
        convert(args.input, args.out, check_hash=not args.no_hash_check)
        return
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, os.path.basename(FID_WEIGHTS_URL))
        torch.hub.download_url_to_file(FID_WEIGHTS_URL, source)
        convert(source, args.out)


if __name__ == "__main__":
    main()
