#!/usr/bin/env python3
"""Writes tests/data/siglip/siglip_tiny.safetensors: a tiny random SigLIP, its inputs and
every intermediate output, computed by the SigLIP code that VILA-U runs.

transformers 4.36.2 (VILA-U's pin) has no SigLIP; VILA-U bundles its own copy in
vila_u/model/multimodal_encoder/rqvaesigliptransformer/rqvaesiglip/siglip/, so that copy
is the reference. Pass a checkout of https://github.com/mit-han-lab/vila-u:

    /tmp/refvenv/bin/python tests/reference/make_siglip_fixtures.py --vila-u /path/to/vila-u
"""

import argparse
import os
import sys

import torch

from fixture_io import save_safetensors, vila_u_commit

SIGLIP_DIR = "vila_u/model/multimodal_encoder/rqvaesigliptransformer/rqvaesiglip"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO_ROOT, "tests", "data", "siglip", "siglip_tiny.safetensors")

VISION = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
              num_hidden_layers=3, num_attention_heads=4)
TEXT = dict(vocab_size=512, max_position_embeddings=16, hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=4)


def randomise(model, generator):
    # HF's init leaves biases at zero and LayerNorms at identity, which would let a C++ port
    # that drops a bias or a LayerNorm affine pass; every tensor gets random values instead.
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if "norm" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("logit_scale"):
                p.fill_(2.3)
            else:
                fan_in = p.shape[-1] if p.dim() >= 2 else p.shape[0]
                if name.endswith("patch_embedding.weight"):
                    fan_in = p[0].numel()
                p.copy_(noise / fan_in**0.5 if p.dim() >= 2 else 0.1 * noise)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vila-u", required=True, help="a checkout of mit-han-lab/vila-u")
    args = parser.parse_args()
    sys.path.insert(0, os.path.join(args.vila_u, SIGLIP_DIR))
    from siglip.configuration_siglip import SiglipConfig
    from siglip.modeling_siglip import SiglipModel

    torch.manual_seed(0)
    config = SiglipConfig(text_config=TEXT, vision_config=VISION)
    model = SiglipModel(config).eval().float()
    randomise(model, torch.Generator().manual_seed(1))

    g = torch.Generator().manual_seed(2)
    pixels = torch.rand((2, 3, 32, 32), generator=g) * 2 - 1
    input_ids = torch.randint(0, TEXT["vocab_size"], (2, TEXT["max_position_embeddings"]),
                              generator=g)

    with torch.no_grad():
        out = model(input_ids=input_ids, pixel_values=pixels, output_hidden_states=True,
                    return_dict=True)

    tensors = {name: p.detach().clone() for name, p in model.named_parameters()}
    tensors["input.pixel_values"] = pixels
    tensors["input.input_ids"] = input_ids
    vision, text = out.vision_model_output, out.text_model_output
    for i, h in enumerate(vision.hidden_states):
        tensors[f"output.vision.hidden_states.{i}"] = h
    tensors["output.vision.last_hidden_state"] = vision.last_hidden_state
    tensors["output.vision.pooler_output"] = vision.pooler_output
    for i, h in enumerate(text.hidden_states):
        tensors[f"output.text.hidden_states.{i}"] = h
    tensors["output.text.last_hidden_state"] = text.last_hidden_state
    tensors["output.text.pooler_output"] = text.pooler_output
    tensors["output.logits_per_image"] = out.logits_per_image

    metadata = {
        "reference": "mit-han-lab/vila-u " + SIGLIP_DIR + "/siglip/modeling_siglip.py",
        "vila_u_commit": vila_u_commit(args.vila_u),
        "torch": torch.__version__.split("+")[0],
        "vision_config": repr(sorted(VISION.items())),
        "text_config": repr(sorted(TEXT.items())),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_safetensors(OUT, tensors, metadata)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
