"""Writes tests/data/metrics/ssim.safetensors: picture pairs and scikit-image's SSIM of each,
the reference for vilau::eval::ssim (tests/unit/test_tower_eval.cpp).

    /tmp/refvenv/bin/pip install scikit-image
    /tmp/refvenv/bin/python tests/reference/make_metric_fixtures.py
"""
import os

import numpy as np
import skimage
import torch
from skimage.metrics import structural_similarity

from fixture_io import save_safetensors

OUT = os.path.join(os.path.dirname(__file__), "..", "data", "metrics", "ssim.safetensors")


def main():
    rng = np.random.default_rng(0)
    tensors = {}
    # A smooth picture against a noisy copy, a shifted copy and an unrelated picture; sizes
    # that are not square and not multiples of the window.
    h, w = 23, 31
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 90 * np.sin(xx / 4.0 + c) * np.cos(yy / 5.0) for c in range(3)], -1)
    base = np.clip(base, 0, 255).astype(np.uint8)
    others = {
        "noisy": np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8),
        "shifted": np.roll(base, 2, axis=1),
        "random": rng.integers(0, 256, base.shape, dtype=np.uint8),
    }
    tensors["input.base"] = torch.from_numpy(base)
    for name, other in others.items():
        value = structural_similarity(base, other, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=255,
                                      channel_axis=-1)
        tensors[f"input.{name}"] = torch.from_numpy(other)
        tensors[f"output.ssim.{name}"] = torch.tensor([value], dtype=torch.float64)
    save_safetensors(OUT, tensors, {"scikit-image": skimage.__version__})


if __name__ == "__main__":
    main()
