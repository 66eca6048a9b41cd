#!/usr/bin/env python3
"""Writes tests/data/pixel_decoder/pixel_decoder_tiny.safetensors: the official pixel decoder
(RQ-VAE's Decoder in VILA-U's rqvaesiglip/modules.py, with RQVAESiglipModel.decode's
post_quant_conv and latent resize) at small shapes, random weights under the
official names, its inputs and outputs.

modules.py needs only torch; it is imported from a checkout of
https://github.com/mit-han-lab/vila-u:

    /tmp/refvenv/bin/python tests/reference/make_pixel_decoder_fixtures.py --vila-u /path/to/vila-u
"""

import argparse
import os

import torch
import torch.nn.functional as F

from fixture_io import load_vila_u_file, save_safetensors, vila_u_commit

MODULES = "vila_u/model/multimodal_encoder/rqvaesigliptransformer/rqvaesiglip/modules.py"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO_ROOT, "tests", "data", "pixel_decoder", "pixel_decoder_tiny.safetensors")

# A small decoder with every kind of block: 4x4 latents of width 32 -> 8 px through two
# levels (a channel change with its nin_shortcut, an upsampling, attention at 4x4).
EMBED_DIM = 32
DDCONFIG = dict(double_z=False, z_channels=8, resolution=8, in_channels=3, out_ch=3, ch=32,
                ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[4], dropout=0.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vila-u", required=True, help="a checkout of mit-han-lab/vila-u")
    args = ap.parse_args()
    # The official Upsample casts its output to bf16 whatever the model dtype; this fp32
    # reference drops that cast (vilau keeps the working dtype, docs/official-quirks.md).
    # Nearest-neighbour doubling is exact, so nothing else changes.
    modules = load_vila_u_file(args.vila_u, MODULES, replace=(".to(torch.bfloat16)", ""))

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    post_quant_conv = torch.nn.Conv2d(EMBED_DIM, DDCONFIG["z_channels"], 1)
    decoder = modules.Decoder(**DDCONFIG)
    named = {f"post_quant_conv.{k}": v for k, v in post_quant_conv.named_parameters()}
    named.update({f"decoder.{k}": v for k, v in decoder.named_parameters()})
    # Every tensor random, GroupNorm scales near 1: a port that drops a bias or an affine
    # would still match default-initialised weights.
    with torch.no_grad():
        for name, p in named.items():
            noise = torch.randn(p.shape, generator=generator)
            p.copy_(1.0 + 0.2 * noise if "norm" in name and name.endswith(".weight")
                    else 0.1 * noise)
    post_quant_conv.eval()
    decoder.eval()

    def decode(z_q, latent_shape=None):
        # RQVAESiglipModel.decode: [B, H, W, C] -> [B, C, H, W], the optional bilinear resize
        # (in fp32; the official code casts to bf16 after it, vilau keeps the working dtype),
        # post_quant_conv, the decoder.
        z = z_q.permute(0, 3, 1, 2).contiguous()
        if latent_shape is not None:
            z = F.interpolate(z.float(), size=tuple(latent_shape), mode="bilinear")
        with torch.no_grad():
            return decoder(post_quant_conv(z))

    out = {f"rqvaesiglip.{k}": v.detach().clone() for k, v in named.items()}
    z_q = torch.randn(2, 4, 4, EMBED_DIM, generator=generator)
    out["input.z_q"] = z_q
    out["output.pixels"] = decode(z_q)
    # The 384 model's path at tiny size: a 5x5 grid resized to the 4x4 the decoder takes.
    z_q5 = torch.randn(1, 5, 5, EMBED_DIM, generator=generator)
    out["input.z_q_5x5"] = z_q5
    out["output.pixels_5x5_to_4x4"] = decode(z_q5, (4, 4))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_safetensors(OUT, out, {"vila_u_commit": vila_u_commit(args.vila_u),
                                "torch": torch.__version__, "ddconfig": str(DDCONFIG)})
    print("wrote", OUT, len(out), "tensors")


if __name__ == "__main__":
    main()
