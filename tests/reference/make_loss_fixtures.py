"""Reference values for the vision-tower losses (tests/unit/test_losses.cpp).

Weights are not stored: both sides draw tensor number k of the sorted parameter names
with torch.manual_seed(1000 + k) and torch.randn(shape) * std (0.05 for the VGG and
discriminator weights, 1 with abs() for the LPIPS heads), which PyTorch and LibTorch
compute identically on the CPU.

Written with plain PyTorch from the published formulas: HF SiglipModel's sigmoid loss,
CLIP's symmetric cross-entropy, the lpips package's VGG16 LPIPS and taming-transformers'
NLayerDiscriminator, each with seeded random weights. Run from the repository root:

    /tmp/refvenv/bin/python tests/reference/make_loss_fixtures.py
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
out = {}

# Contrastive losses.
img, txt = torch.randn(4, 8), torch.randn(4, 8)
scale, bias = torch.tensor([2.3]), torch.tensor([-1.7])
i, t = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
logits = t @ i.t() * scale.exp() + bias
labels = 2 * torch.eye(4) - 1
out["siglip.loss"] = (-F.logsigmoid(labels * logits).sum(-1).mean()).reshape(1)
logits = t @ i.t() * scale.exp()
target = torch.arange(4)
out["clip.loss"] = ((F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2).reshape(1)
out.update({"input.image_embeds": img, "input.text_embeds": txt, "input.logit_scale": scale, "input.logit_bias": bias})

def seeded(names_shapes, std):
    """The same tensors the C++ test draws: one seed per name, in sorted order."""
    out = {}
    for k, name in enumerate(sorted(names_shapes)):
        torch.manual_seed(1000 + k)
        out[name] = torch.randn(names_shapes[name]) * std(name)
    return out


# LPIPS on VGG16 with random weights, the lpips package's layout and names.
widths = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]
shapes, plan, index, cin = {}, [], 0, 3
for s, ws in enumerate(widths):
    if s > 0:
        plan.append((s, "pool", index))
        index += 1
    for w in ws:
        shapes[f"net.slice{s + 1}.{index}.weight"] = (w, cin, 3, 3)
        shapes[f"net.slice{s + 1}.{index}.bias"] = (w,)
        plan.append((s, "conv", index))
        index += 2
        cin = w
    shapes[f"lin{s}.model.1.weight"] = (1, ws[-1], 1, 1)
weights = seeded(shapes, lambda n: 0.05)
weights = {k: (v.abs() if k.startswith("lin") else v) for k, v in weights.items()}
shift = torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1)
scl = torch.tensor([.458, .448, .450]).view(1, 3, 1, 1)
a_in, b_in = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
with torch.no_grad():
    a, b, total = (a_in - shift) / scl, (b_in - shift) / scl, 0
    for s in range(len(widths)):
        for _, kind, i in [p for p in plan if p[0] == s]:
            if kind == "pool":
                a, b = F.max_pool2d(a, 2, 2), F.max_pool2d(b, 2, 2)
            else:
                w, bb = weights[f"net.slice{s + 1}.{i}.weight"], weights[f"net.slice{s + 1}.{i}.bias"]
                a, b = F.relu(F.conv2d(a, w, bb, padding=1)), F.relu(F.conv2d(b, w, bb, padding=1))
        unit = lambda f: f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total = total + F.conv2d((unit(a) - unit(b)) ** 2, weights[f"lin{s}.model.1.weight"]).mean([2, 3])
out["lpips.input.a"], out["lpips.input.b"], out["lpips.output"] = a_in, b_in, total.flatten()

# PatchGAN (NLayerDiscriminator, ndf 64, 2 layers) in eval mode.
seq, mult = [nn.Conv2d(3, 64, 4, 2, 1), nn.LeakyReLU(0.2)], 1
for n in range(1, 3):
    prev, mult = mult, min(2 ** n, 8)
    seq += [nn.Conv2d(64 * prev, 64 * mult, 4, 1 if n == 2 else 2, 1, bias=False), nn.BatchNorm2d(64 * mult), nn.LeakyReLU(0.2)]
seq.append(nn.Conv2d(64 * mult, 1, 4, 1, 1))
disc = nn.Sequential(*seq).eval()
state = {k: v for k, v in disc.state_dict().items() if not k.endswith("num_batches_tracked")}
params = seeded({k: tuple(v.shape) for k, v in state.items()}, lambda n: 0.05)
for k, v in params.items():
    if k.endswith("running_var"):
        v = v.abs() + 0.5
    elif k.endswith("weight") and v.dim() == 1:
        v = v + 1.0
    state[k].copy_(v)
x = torch.rand(2, 3, 32, 32) * 2 - 1
with torch.no_grad():
    out["disc.input"], out["disc.output"] = x, disc(x)

save_file({k: v.contiguous() for k, v in out.items()}, "tests/data/losses/losses.safetensors", metadata={"format": "pt"})
print(f"wrote {len(out)} tensors")
