"""Reference values for FID (tests/unit/test_eval_fid.cpp), written to tests/data/fid/.

- frechet.safetensors: two seeded feature sets, numpy's mean and covariance of each and
  pytorch-fid's calculate_frechet_distance (scipy.linalg.sqrtm with its eps fallback).
  stats_a/stats_b.safetensors hold the same statistics in vilau's stats format, for the
  CLI test.
- inception.safetensors: two small uint8 images, clean-fid's "clean" resize of them
  (Pillow bicubic on float32 channels, clipped), Pillow mode "F" resizes to small sizes, and
  pytorch-fid's FID Inception (fid_inception_v3 up to pool3) on (x - 128) / 128 with
  seeded random weights; the metadata key state_dict lists its tensors' names and shapes. The weights are not stored: tensor number k of the sorted names
  is drawn after torch.manual_seed(k), which PyTorch and LibTorch turn into the same
  numbers on the CPU.

    python3 -m venv /tmp/fidvenv
    /tmp/fidvenv/bin/pip install torch==2.13.0 pytorch-fid clean-fid scipy numpy pillow
    OMP_NUM_THREADS=1 /tmp/fidvenv/bin/python tests/reference/make_fid_fixtures.py

One thread makes the output byte-identical on every run.
"""
import json
import math
import os
from importlib.metadata import version
from unittest import mock

import numpy as np
import torch

# PyPI's torchvision is built for a CUDA torch: next to the CPU torch its C++ operators do not
# load, and importing it fails while registering their fake kernels. pytorch-fid needs only
# torchvision's Python Inception modules, so that registration is skipped.
with mock.patch.object(torch.library, "register_fake", lambda *a, **k: (lambda f: f)):
    import torchvision  # noqa: F401
from cleanfid.resize import make_resizer
from PIL import Image
from pytorch_fid import inception as fid_inception
from pytorch_fid.fid_score import calculate_frechet_distance

from fixture_io import save_safetensors

OUT = os.path.join(os.path.dirname(__file__), "..", "data", "fid")
VERSIONS = {name: version(name) for name in
            ("torch", "torchvision", "pytorch-fid", "clean-fid", "scipy", "numpy", "pillow")}


def stats_of(features):
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_fixtures():
    rng = np.random.default_rng(0)
    d = 64
    # a: correlated, full rank. b: another mean, and a spectrum falling from 3 to 3e-4, so
    # that sigma_b is badly conditioned (condition number 1e8), as pool3 covariances of small
    # sets are. c: fewer samples than dimensions, so sigma_c is singular (rank 39).
    a = rng.standard_normal((300, d)) @ (rng.standard_normal((d, d)) / math.sqrt(d)) + 0.5
    rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
    spectrum = 3.0 * np.logspace(0, -4, d)
    b = (rng.standard_normal((250, d)) * spectrum) @ rotation + rng.standard_normal(d) * 0.3
    c = rng.standard_normal((40, d)) + 0.2
    t = lambda x: torch.from_numpy(np.ascontiguousarray(x))
    out, stats = {}, {}
    for name, features in (("a", a), ("b", b), ("c", c)):
        stats[name] = stats_of(features)
        out[f"features.{name}"] = t(features)
        out[f"mu.{name}"], out[f"sigma.{name}"] = (t(x) for x in stats[name])
    for pair in ("ab", "ac"):
        fid = calculate_frechet_distance(*stats[pair[0]], *stats[pair[1]])
        out[f"fid.{pair}"] = torch.tensor([fid], dtype=torch.float64)
        print(f"fid({pair[0]}, {pair[1]}) = {fid!r}")
    save_safetensors(os.path.join(OUT, "frechet.safetensors"), out, VERSIONS)
    for name, n in (("a", len(a)), ("b", len(b))):
        save_safetensors(os.path.join(OUT, f"stats_{name}.safetensors"),
                         {"mu": t(stats[name][0]), "sigma": t(stats[name][1])},
                         {"format": "vilau-fid-stats", "count": str(n)})


def seeded_value(name, shape):
    """Scaled so that activations keep their size through the 90-odd convolutions."""
    if name.endswith("conv.weight"):
        return torch.randn(shape) * math.sqrt(2.0 / (shape[1] * shape[2] * shape[3]))
    if name.endswith("running_var"):
        return torch.rand(shape) + 0.5
    if name.endswith("bn.weight"):
        return torch.randn(shape) * 0.2 + 1.0
    return torch.randn(shape) * 0.1  # bn.bias, bn.running_mean


def seeded_inception():
    # fid_inception_v3() downloads the real weights; they are replaced, so skip the load.
    with mock.patch.object(fid_inception, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(torch.nn.Module, "load_state_dict", lambda *a, **k: None):
        net = fid_inception.fid_inception_v3()
    state = {k: v for k, v in net.state_dict().items()
             if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    with torch.no_grad():
        for k, name in enumerate(sorted(state)):
            torch.manual_seed(k)
            state[name].copy_(seeded_value(name, tuple(state[name].shape)))
    # pytorch-fid's pool3 wrapper around exactly this network.
    with mock.patch.object(fid_inception, "fid_inception_v3", lambda: net):
        model = fid_inception.InceptionV3([3], resize_input=False, normalize_input=False)
    return model.eval(), {name: list(t.shape) for name, t in state.items()}


def test_image(rng, h, w):
    """Smooth gradients plus noise and a hard edge, so that every tap of the filter matters."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 7) % 256, (y * 5) % 256, ((x + 2 * y) * 3) % 256], -1)
    base[:, w // 2:, 1] = 250
    return np.clip(base + rng.integers(-60, 60, base.shape), 0, 255).astype(np.uint8)


def pil_float(image, width, height):
    channels = [np.asarray(Image.fromarray(image[:, :, c].astype(np.float32), mode="F")
                           .resize((width, height), Image.BICUBIC)) for c in range(3)]
    return np.stack(channels, -1)


def inception_fixtures():
    rng = np.random.default_rng(1)
    images = [test_image(rng, 40, 56), test_image(rng, 52, 34)]
    clean = make_resizer("PIL", False, "bicubic", (299, 299))
    resized = [clean(im) for im in images]
    out = {}
    for i, (im, r) in enumerate(zip(images, resized)):
        out[f"input.image{i}"] = torch.from_numpy(im)
        # The full 299 x 299 x 3 float image is 1 MB: keep every 13th row and column, and
        # per-channel sums that see every pixel.
        out[f"clean.image{i}.strided"] = torch.from_numpy(np.ascontiguousarray(r[::13, ::13]))
        out[f"clean.image{i}.sum"] = torch.from_numpy(r.astype(np.float64).sum((0, 1)))
    out["pil_float.23x17"] = torch.from_numpy(pil_float(images[0], 23, 17))  # shrink
    out["pil_float.67x45"] = torch.from_numpy(pil_float(images[0], 67, 45))  # enlarge
    pixels = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2)
    model, shapes = seeded_inception()
    with torch.no_grad():
        features = model((pixels - 128) / 128)[0].flatten(1)
    out["output.features"] = features.contiguous()
    metadata = dict(VERSIONS, state_dict=json.dumps(shapes, sort_keys=True, separators=(",", ":")))
    save_safetensors(os.path.join(OUT, "inception.safetensors"), out, metadata)
    print(f"features: mean {features.mean():.4f} std {features.std():.4f} "
          f"zero fraction {(features == 0).float().mean():.3f} "
          f"image difference {(features[0] - features[1]).abs().mean():.4f}")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    frechet_fixtures()
    inception_fixtures()
