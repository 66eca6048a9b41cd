"""Pillow's bicubic resize, which the official pipeline applies before CLIPImageProcessor
(SPEC §2.2), on a seeded random image, for tests/unit/test_preprocess.cpp.

    /tmp/refvenv/bin/python tests/reference/make_preprocess_fixtures.py
"""
import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

rng = np.random.default_rng(0)
# Smooth content plus noise: realistic gradients and hard edges.
y, x = np.mgrid[0:45, 0:70]
base = np.stack([(x * 3) % 256, (y * 5) % 256, ((x + y) * 2) % 256], -1)
image = np.clip(base + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)
out = {"input": torch.from_numpy(image)}
for size in (32, 96):  # downscale and upscale
    resized = Image.fromarray(image).resize((size, size), Image.BICUBIC)
    out[f"pil_bicubic.{size}"] = torch.from_numpy(np.asarray(resized).copy())
save_file(out, "tests/data/preprocess/pil_bicubic.safetensors", metadata={"format": "pt", "pillow": Image.__version__})
print("wrote", list(out))
