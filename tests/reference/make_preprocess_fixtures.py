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

# Pictures with alpha, as users feed them: Pillow resizes RGBA and LA premultiplied by alpha
# (Image.resize converts to RGBa / La and back), and the official pipeline drops alpha only
# afterwards (convert("RGB")). Fully transparent and opaque bands test the edges of the
# premultiplication; the same-size resize is Pillow's plain copy.
alpha_rng = np.random.default_rng(1)
alpha = alpha_rng.integers(0, 256, image.shape[:2])
alpha[:8] = 0
alpha[-8:] = 255
rgba = np.dstack([image, alpha]).astype(np.uint8)
la = np.dstack([image[..., 0], alpha]).astype(np.uint8)
alpha_out = {"input_rgba": torch.from_numpy(rgba), "input_la": torch.from_numpy(la)}
for name, array, mode in (("rgba", rgba, "RGBA"), ("la", la, "LA")):
    picture = Image.fromarray(array, mode)
    picture.save(f"tests/data/preprocess/{name}.png")
    for size in ((32, 32), (96, 96), (70, 45)):
        key = f"pil_{name}.{size[0]}x{size[1]}"
        rgb = picture.resize(size, Image.BICUBIC).convert("RGB")
        alpha_out[key] = torch.from_numpy(np.asarray(rgb).copy())
save_file(alpha_out, "tests/data/preprocess/pil_alpha.safetensors",
          metadata={"format": "pt", "pillow": Image.__version__})
print("wrote", list(alpha_out), "and rgba.png, la.png")
