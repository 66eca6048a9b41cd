"""Shared by the fixture scripts in this folder."""
import json
import os
import subprocess
import types

import torch


def vila_u_commit(root):
    """The commit of a VILA-U checkout, recorded in the fixtures made from its code."""
    try:
        return subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_vila_u_file(root, path, replace=None):
    """A module of the VILA-U checkout `root` that needs only torch (and numpy), executed on
    its own, without importing the package around it. `replace` (old, new) patches its
    source first; `old` must occur exactly once, so that a changed file is noticed."""
    with open(os.path.join(root, path)) as f:
        source = f.read()
    if replace is not None:
        old, new = replace
        assert source.count(old) == 1, f"{path} changed: check the patch of {old!r}"
        source = source.replace(old, new)
    module = types.ModuleType(os.path.splitext(os.path.basename(path))[0])
    exec(compile(source, path, "exec"), module.__dict__)
    return module


def save_safetensors(path, tensors, metadata):
    """Written by hand rather than with the safetensors package, whose metadata order varies
    between runs: sorted keys make the file byte-identical every time."""
    dtypes = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64", torch.uint8: "U8"}
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        data = t.numpy().tobytes()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        f.writelines(blobs)
