#!/usr/bin/env python3
"""Writes tests/data/llama/llama_tiny.safetensors: two tiny random HF LLaMA models, a
left-padded batch and their logits, computed by transformers 4.36.2 (VILA-U's pin):

    /tmp/refvenv/bin/python tests/reference/make_llama_fixtures.py
"""

import json
import os

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

from fixture_io import save_safetensors

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO_ROOT, "tests", "data", "llama", "llama_tiny.safetensors")

BASE = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=64, rms_norm_eps=1e-5,
            rope_theta=10000.0, tie_word_embeddings=False)
# (a) plain multi-head attention; (b) GQA with VILA-U's linear RoPE scaling (SPEC §3.1).
CONFIGS = {
    "a": dict(BASE, num_key_value_heads=4),
    "b": dict(BASE, num_key_value_heads=2, rope_scaling={"type": "linear", "factor": 2.0}),
}
LENGTHS = (7, 4)  # the second sequence is left-padded to the first's length


def randomise(model, generator):
    # RMSNorm weights start at one, which would let a port that drops them pass.
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(noise / p.shape[-1] ** 0.5)


def main():
    g = torch.Generator().manual_seed(2)
    length = max(LENGTHS)
    input_ids = torch.randint(0, BASE["vocab_size"], (len(LENGTHS), length), generator=g)
    mask = torch.zeros((len(LENGTHS), length), dtype=torch.int64)
    for row, n in enumerate(LENGTHS):
        mask[row, length - n:] = 1
    input_ids = input_ids.masked_fill(mask == 0, 0)  # pad id 0, as VILA-U's <unk>
    # HF's rule for left padding (LlamaForCausalLM.prepare_inputs_for_generation).
    position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    # A fixed 20-token continuation for the KV-cache test.
    continuation = torch.randint(0, BASE["vocab_size"], (len(LENGTHS), 20), generator=g)
    full_ids = torch.cat([input_ids, continuation], 1)
    full_mask = torch.cat([mask, torch.ones_like(continuation)], 1)
    full_positions = (full_mask.cumsum(-1) - 1).masked_fill(full_mask == 0, 1)

    tensors = {"input.input_ids": input_ids, "input.attention_mask": mask,
               "input.position_ids": position_ids, "input.continuation": continuation}
    for i, (prefix, kwargs) in enumerate(CONFIGS.items()):
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**kwargs)).eval().float()
        randomise(model, torch.Generator().manual_seed(10 + i))
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=mask,
                           position_ids=position_ids).logits
            full = model(input_ids=full_ids, attention_mask=full_mask,
                         position_ids=full_positions).logits
        for name, p in model.named_parameters():
            tensors[f"{prefix}.{name}"] = p.detach().clone()
        tensors[f"output.{prefix}.logits"] = logits
        tensors[f"output.{prefix}.full_logits"] = full

    metadata = {
        "reference": "transformers LlamaForCausalLM (eager attention)",
        "transformers": transformers.__version__,
        "torch": torch.__version__.split("+")[0],
        "configs": json.dumps(CONFIGS, sort_keys=True),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_safetensors(OUT, tensors, metadata)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
