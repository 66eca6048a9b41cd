#!/usr/bin/env python3
"""Writes tests/data/depth/depth_tiny.safetensors: a tiny random depth transformer
(VILA-U's RQTransformer) and a tiny mlp2x_gelu projector, their inputs and outputs, computed
by VILA-U's own code.

Pass a checkout of https://github.com/mit-han-lab/vila-u:

    /tmp/refvenv/bin/python tests/reference/make_depth_fixtures.py --vila-u /path/to/vila-u
"""

import argparse
import contextlib
import dataclasses
import importlib.util
import os
import sys

import torch

from fixture_io import save_safetensors, vila_u_commit

ENCODER_DIR = "vila_u/model/multimodal_encoder/rqvaesigliptransformer"
PROJECTOR_FILE = "vila_u/model/multimodal_projector/base_projector.py"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO_ROOT, "tests", "data", "depth", "depth_tiny.safetensors")

EMBED_DIM, LAYERS, HEADS = 32, 2, 4
DEPTH, CODEBOOK, CODE_DIM, LLM_HIDDEN = 3, 16, 8, 24
CFG = 3.0


@contextlib.contextmanager
def hashable_dataclasses():
    # configuration_rqtransformer.py uses a dataclass instance as a field default. Python 3.11
    # rejects that (the instance is unhashable); VILA-U runs on 3.10, which accepts it and shares
    # the one default. Giving the dataclasses a hash restores 3.10's behaviour and nothing else.
    original = dataclasses.dataclass

    def dataclass(cls=None, **kwargs):
        kwargs.setdefault("unsafe_hash", True)
        return original(cls, **kwargs) if cls is not None else original(**kwargs)

    dataclasses.dataclass = dataclass
    try:
        yield
    finally:
        dataclasses.dataclass = original


def import_official(root):
    import transformers  # noqa: F401  (imported outside the patch below)

    sys.path.insert(0, os.path.join(root, ENCODER_DIR))
    with hashable_dataclasses():
        from rqtransformer import modeling_rqtransformer
    spec = importlib.util.spec_from_file_location("base_projector",
                                                  os.path.join(root, PROJECTOR_FILE))
    base_projector = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base_projector)
    return modeling_rqtransformer, base_projector


def randomise(model, generator):
    # PyTorch's init leaves LayerNorms at identity, which would let a C++ port that drops a
    # LayerNorm affine pass; every tensor gets random values instead.
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if ("ln" in name or "norm" in name) and name.endswith(".weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif p.dim() >= 2:
                p.copy_(noise / p.shape[-1]**0.5)
            else:
                p.copy_(0.1 * noise)


class Codebooks:
    """Stands in for the vision tower (`model_aux`): one codebook per depth, looked up as
    RQVAESiglipModel.get_code_emb_with_depth does."""

    def __init__(self, weight):
        self.weight = weight  # [D, K, C]

    def get_code_emb_with_depth(self, code):  # [..., D] -> [..., D, C]
        embeds = [self.weight[d][code[..., d]] for d in range(code.shape[-1])]
        return torch.stack(embeds, dim=-2), None


def generate_with_fixed_codes(module, model, hidden, codes, aux):
    """Runs the official generate, but with its sampler replaced by one that returns `codes`
    ([B/2, 1, D]) depth by depth. Returns the raw logits of each depth pass [B, D, K] (cond
    rows first) and the CFG-combined logits the sampler saw [B/2, D, K]."""
    raw, guided = [], []
    hook = model.classifier_mlp.register_forward_hook(lambda m, i, o: raw.append(o.clone()))

    def fixed_sampler(logits, **kwargs):
        guided.append(logits.clone())
        return codes[:, 0, len(guided) - 1].clone()

    sampler = module.sample_from_logits
    module.sample_from_logits = fixed_sampler
    try:
        features, code = model.generate(hidden, model_aux=aux, cfg=CFG)
    finally:
        module.sample_from_logits = sampler
        hook.remove()
    assert torch.equal(code, codes.repeat(2, 1, 1))
    return torch.stack(raw, dim=1), torch.stack(guided, dim=1), features


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vila-u", required=True, help="a checkout of mit-han-lab/vila-u")
    args = parser.parse_args()
    rqt, base_projector = import_official(args.vila_u)

    torch.manual_seed(0)
    config = rqt.RQTransformerConfig(
        block_size=[1, 1, DEPTH], input_embed_dim_1=CODE_DIM, input_embed_dim_2=LLM_HIDDEN,
        embed_dim=EMBED_DIM, vocab_size=CODEBOOK,
        head={"block": {"n_head": HEADS}, "n_layer": LAYERS})
    model = rqt.RQTransformer(config).eval().float()
    randomise(model, torch.Generator().manual_seed(1))

    g = torch.Generator().manual_seed(2)
    aux = Codebooks(torch.randn((DEPTH, CODEBOOK, CODE_DIM), generator=g))

    # Teacher-forced training forward: batch 2, 3 positions each.
    train_hidden = torch.randn((2, 3, LLM_HIDDEN), generator=g)
    train_codes = torch.randint(0, CODEBOOK, (2, 3, DEPTH), generator=g)
    # Generation: 2 conditional rows, then their 2 unconditional twins, one position each.
    gen_hidden = torch.randn((4, 1, LLM_HIDDEN), generator=g)
    gen_codes = torch.randint(0, CODEBOOK, (2, 1, DEPTH), generator=g)

    with torch.no_grad():
        train_logits = model(train_hidden, train_codes, model_aux=aux)
        gen_logits, gen_guided, gen_features = generate_with_fixed_codes(
            rqt, model, gen_hidden, gen_codes, aux)

    tensors = {"rqtransformer." + name: p.detach().clone()
               for name, p in model.named_parameters()}
    tensors["codebooks"] = aux.weight
    tensors["input.train.hidden"] = train_hidden
    tensors["input.train.codes"] = train_codes
    prefix_sums = torch.cumsum(aux.get_code_emb_with_depth(train_codes)[0], dim=-2)
    tensors["input.train.code_prefix_sums"] = prefix_sums[:, :, :-1].contiguous()
    tensors["output.train.logits"] = train_logits
    tensors["input.gen.hidden"] = gen_hidden
    tensors["input.gen.codes"] = gen_codes
    tensors["output.gen.logits"] = gen_logits
    tensors["output.gen.cfg_logits"] = gen_guided
    tensors["output.gen.features"] = gen_features

    projector_config = base_projector.MultimodalProjectorConfig(mm_projector_type="mlp2x_gelu")
    sizes = base_projector.PretrainedConfig(mm_hidden_size=CODE_DIM, hidden_size=LLM_HIDDEN)
    projector = base_projector.MultimodalProjector(projector_config, sizes).eval().float()
    randomise(projector, torch.Generator().manual_seed(3))
    projector_input = torch.randn((2, 5, CODE_DIM), generator=g)
    with torch.no_grad():
        projector_output = projector(projector_input)
    for name, p in projector.named_parameters():
        tensors["mm_projector." + name] = p.detach().clone()
    tensors["input.projector"] = projector_input
    tensors["output.projector"] = projector_output

    metadata = {
        "reference": "mit-han-lab/vila-u " + ENCODER_DIR + "/rqtransformer, " + PROJECTOR_FILE,
        "vila_u_commit": vila_u_commit(args.vila_u),
        "torch": torch.__version__.split("+")[0],
        "config": repr(dict(embed_dim=EMBED_DIM, n_layer=LAYERS, n_head=HEADS, depth=DEPTH,
                            vocab_size=CODEBOOK, code_dim=CODE_DIM, llm_hidden=LLM_HIDDEN)),
        "cfg": repr(CFG),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_safetensors(OUT, tensors, metadata)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
