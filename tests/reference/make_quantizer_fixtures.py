#!/usr/bin/env python3
"""Writes tests/data/quantizer/quantizer_tiny.safetensors: VILA-U's residual quantizer
(RQBottleneck in rqvaesiglip/quantizations.py) on a 4x4 grid of width 16, three depths of 12
codes: the codes, z_q and commitment loss of an eval forward, then the codebooks and EMA
buffers after each of two training forwards (the EMA update), with separate and with shared
codebooks.

Every code starts with an EMA cluster size of 10, so none falls below 1 within two steps and
the dead-code restart (random by design) leaves them alone; vilau tests its restart on its
own. quantizations.py needs torch and numpy; it is imported from a checkout of
https://github.com/mit-han-lab/vila-u:

    /tmp/refvenv/bin/python tests/reference/make_quantizer_fixtures.py --vila-u /path/to/vila-u
"""

import argparse
import os

import torch

from fixture_io import load_vila_u_file, save_safetensors, vila_u_commit

QUANTIZATIONS = "vila_u/model/multimodal_encoder/rqvaesigliptransformer/rqvaesiglip/quantizations.py"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO_ROOT, "tests", "data", "quantizer", "quantizer_tiny.safetensors")
WIDTH, DEPTH, CODES, DECAY = 16, 3, 12, 0.9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vila-u", required=True, help="a checkout of mit-han-lab/vila-u")
    args = ap.parse_args()
    quantizations = load_vila_u_file(args.vila_u, QUANTIZATIONS)

    generator = torch.Generator().manual_seed(0)
    out = {}
    for shared in (False, True):
        tag = "shared" if shared else "separate"
        torch.manual_seed(1)  # the restart's draws (no code is restarted, see above)
        rq = quantizations.RQBottleneck([4, 4, WIDTH], [4, 4, DEPTH], CODES, decay=DECAY,
                                        shared_codebook=shared, restart_unused_codes=True)
        with torch.no_grad():
            for d in range(1 if shared else DEPTH):
                book = rq.codebooks[d]
                book.weight.copy_(torch.randn(book.weight.shape, generator=generator))
                book.embed_ema.copy_(book.weight[:-1] * 10.0)
                book.cluster_size_ema.fill_(10.0)
        for d in range(1 if shared else DEPTH):
            book = rq.codebooks[d]
            for name in ("weight", "cluster_size_ema", "embed_ema"):
                out[f"{tag}.initial.codebooks.{d}.{name}"] = getattr(book, name).detach().clone()
        # Residual quantization: the inputs' scale is the codes', so later depths matter.
        x = torch.randn(2, 4, 4, WIDTH, generator=generator)
        out[f"{tag}.eval.input"] = x
        rq.eval()
        with torch.no_grad():
            z_q, loss, codes = rq(x)
        out[f"{tag}.eval.z_q"], out[f"{tag}.eval.commitment_loss"] = z_q, loss.reshape(1)
        out[f"{tag}.eval.codes"] = codes
        rq.train()
        for step in range(2):
            x = torch.randn(2, 4, 4, WIDTH, generator=generator)
            with torch.no_grad():
                z_q, loss, codes = rq(x)
            out[f"{tag}.train.{step}.input"] = x
            out[f"{tag}.train.{step}.codes"] = codes
            for d in range(1 if shared else DEPTH):
                book = rq.codebooks[d]
                assert bool((book.cluster_size_ema >= 1).all()), "a code would be restarted"
                for name in ("weight", "cluster_size_ema", "embed_ema"):
                    out[f"{tag}.train.{step}.codebooks.{d}.{name}"] = \
                        getattr(book, name).detach().clone()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_safetensors(OUT, out, {"vila_u_commit": vila_u_commit(args.vila_u),
                                "torch": torch.__version__, "decay": str(DECAY)})
    print("wrote", OUT, len(out), "tensors")


if __name__ == "__main__":
    main()
