"""Self-tests of the eager baseline: the built-in LLaMA against transformers' with shared
weights, the depth transformer against the fixture that VILA-U's own code wrote
(tests/data/depth/depth_tiny.safetensors), and every bench mode on the tiny preset."""

import json
import math
import os
import struct
import sys
import time

import torch

import eager_models as em

TOLERANCE = 1e-5
FIXTURE = os.path.join(em.REPO_ROOT, "tests", "data", "depth", "depth_tiny.safetensors")
SAFETENSORS_DTYPES = {"F32": torch.float32, "I64": torch.int64, "BF16": torch.bfloat16}


def read_safetensors(path):
    # Read by hand so that the self-test needs no package beyond torch.
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        flat = torch.frombuffer(bytearray(data[begin:end]), dtype=SAFETENSORS_DTYPES[info["dtype"]])
        out[name] = flat.reshape(info["shape"])
    return out


def tiny_llm_config():
    # The tiny preset's LLM, with linear RoPE scaling switched on so that it is tested too.
    c = em.load_preset("tiny")["llm"]
    c["rope_scaling_factor"] = 2.0
    return c


def llama_checks(attn):
    """Largest |builtin - HF| over three uses: a left-padded batch with the official position
    ids, the same continued with the KV cache, and an unpadded causal forward."""
    c = tiny_llm_config()
    torch.manual_seed(0)
    hf = em.HfLlama(c, attn)
    with torch.no_grad():
        # The 0.02 init leaves attention almost uniform, which would hide a wrong RoPE or
        # mask; weights of unit-scale outputs and non-trivial norm gains make them count.
        for name, w in hf.module.named_parameters():
            w.copy_(torch.randn_like(w) * (w.shape[-1] ** -0.5 if w.dim() == 2 else 0.2)
                    + (1.0 if w.dim() == 1 else 0.0))
    builtin = em.BuiltinLlama(c)
    builtin.load_state_dict(hf.module.state_dict(), strict=True)
    hf.module.eval(), builtin.eval()
    g = torch.Generator().manual_seed(3)
    lengths = [12, 7, 9]
    ids = torch.randint(3, c["vocab_size"], (3, 12), generator=g)
    mask = (torch.arange(12)[None] >= 12 - torch.tensor(lengths)[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0)
    positions = (mask.cumsum(1) - 1).masked_fill(mask == 0, 1)
    worst = {}
    with torch.no_grad():
        outs = []
        for m in (hf, builtin):
            h, cache = m.hidden(m.embed(ids), positions, mask, None, use_cache=True)
            steps, pos, msk = [m.logits(h)[mask.bool()]], positions, mask
            for s in range(3):
                pos, msk = pos[:, -1:] + 1, torch.cat([msk, msk.new_ones(3, 1)], 1)
                x = m.embed(torch.full((3, 1), 5 + s))
                h, cache = m.hidden(x, pos, msk, cache, use_cache=True)
                steps.append(m.logits(h[:, -1]))
            plain, _ = m.hidden(m.embed(ids[:, :10] + 3))
            outs.append((steps, m.logits(plain)))
        (hf_steps, hf_plain), (b_steps, b_plain) = outs
        worst["padded_prefill"] = (hf_steps[0] - b_steps[0]).abs().max().item()
        worst["cached_steps"] = max((a - b).abs().max().item()
                                    for a, b in zip(hf_steps[1:], b_steps[1:]))
        worst["causal_no_mask"] = (hf_plain - b_plain).abs().max().item()
    return worst


def depth_checks():
    """Our depth transformer against the outputs of the official RQTransformer."""
    t = read_safetensors(FIXTURE)
    w = {k[len("rqtransformer."):]: v for k, v in t.items() if k.startswith("rqtransformer.")}
    depth, codebook, e = w["pos_emb_d"].shape[1], w["classifier_mlp.linear.weight"].shape[0], \
        w["pos_emb_d"].shape[2]
    code_dim, llm_hidden = w["in_mlp_1.weight"].shape[1], w["in_mlp_2.weight"].shape[1]
    layers = len({k.split(".")[2] for k in w if k.startswith("head_transformer.blocks.")})
    heads = 4  # the fixture's n_head; it is not recoverable from the shapes
    model = em.DepthTransformer(dict(embed_dim=e, num_layers=layers, num_heads=heads,
                                     attn_dropout=0.0, resid_dropout=0.1),
                                depth, codebook, code_dim, llm_hidden).eval()
    model.load_state_dict(w, strict=True)
    books = em.Codebooks(depth, codebook, code_dim)
    books.weight.data.copy_(t["codebooks"])
    cfg = 3.0
    worst = {}
    with torch.no_grad():
        train = model(t["input.train.hidden"].reshape(-1, llm_hidden),
                      t["input.train.code_prefix_sums"].reshape(-1, depth - 1, code_dim))
        worst["teacher_forced"] = (train.reshape(t["output.train.logits"].shape)
                                   - t["output.train.logits"]).abs().max().item()
        fixed = t["input.gen.codes"][:, 0]  # [N, D]: the codes the official sampler "drew"
        guided = []

        def replay(logits):
            guided.append(logits)
            return fixed[:, len(guided) - 1].clone()

        raw = []
        features, codes = model.generate(t["input.gen.hidden"][:, 0], books, cfg, replay, raw)
        worst["generate_raw_logits"] = (torch.stack(raw, 1)
                                        - t["output.gen.logits"]).abs().max().item()
        worst["generate_cfg_logits"] = (torch.stack(guided, 1)
                                        - t["output.gen.cfg_logits"]).abs().max().item()
        worst["generate_features"] = (features - t["output.gen.features"][:, 0]).abs().max().item()
        assert torch.equal(codes, fixed.repeat(2, 1))
        proj = em.projector(code_dim, llm_hidden)
        proj.load_state_dict({k[len("mm_projector.layers."):]: v for k, v in t.items()
                              if k.startswith("mm_projector.")})
        worst["projector"] = (proj(t["input.projector"]) - t["output.projector"]).abs().max().item()
    return worst


def sampler_checks():
    """Top-k then top-p: only the allowed codes may come out."""
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0, -1.0]]).repeat(2000, 1)
    draws = em.sample_official(logits, top_k=3, top_p=0.7)
    # top-k keeps 0..2; their softmax is .665/.245/.090, and top-p 0.7 keeps 0 and 1.
    return {"top_k_top_p_support_ok": set(draws.tolist()) == {0, 1}}


def run(args):
    result = {"ok": True}
    torch.set_default_dtype(torch.float32)
    try:
        import transformers
        result["transformers_version"] = transformers.__version__
        for attn in ("eager", "sdpa"):
            worst = llama_checks(attn)
            result["llama_vs_hf_" + attn] = worst
            result["ok"] &= all(v < TOLERANCE for v in worst.values())
    except ImportError:
        result["llama_vs_hf"] = "skipped: transformers is not installed"
    if os.path.exists(FIXTURE):
        worst = depth_checks()
        result["depth_vs_official_fixture"] = worst
        result["ok"] &= all(v < TOLERANCE for v in worst.values())
    else:
        result["depth_vs_official_fixture"] = "skipped: " + FIXTURE + " is missing"
    sampler = sampler_checks()
    result["sampler"] = sampler
    result["ok"] &= all(sampler.values())
    result["tolerance"] = TOLERANCE
    return result


def run_all(args, parse, run_bench, metrics):
    """The self-test, then each mode with each LLM implementation on the tiny preset."""
    result = run(args)
    impls = ["hf", "builtin"] if result.get("transformers_version") else ["builtin"]
    runs = []
    for impl in impls:
        for mode in ("generate", "decode", "train"):
            argv = ["--mode", mode, "--preset", "configs/presets/tiny.yaml", "--device", "cpu",
                    "--dtype", "fp32", "--batch", "2", "--repeat", "1", "--llm-impl", impl,
                    "--seq-len", "64", "--new-tokens", "32"]
            start = time.perf_counter()
            report = run_bench(parse(argv))
            wall = time.perf_counter() - start
            json.loads(json.dumps(report))  # must be plain JSON
            good = all(k in report and (report[k] is None or math.isfinite(report[k]))
                       for k in metrics[mode])
            good &= impl != "builtin" or report["llm_impl"] == em.BuiltinLlama.impl
            runs.append({"mode": mode, "llm_impl": report["llm_impl"], "wall_s": round(wall, 2),
                         "ok": bool(good and wall < 60),
                         **{k: report[k] for k in metrics[mode]}})
            result["ok"] &= runs[-1]["ok"]
            print(f"check: {mode} {impl}: {wall:.1f} s", file=sys.stderr)
    result["runs"] = runs
    return result
