#!/usr/bin/env python3
"""Eager PyTorch baseline for `vilau bench`: the same model config, dtype and batch, run the way
users run VILA-U today (transformers' LlamaForCausalLM plus the official depth-transformer
loop). Prints one JSON object on stdout; everything else goes to stderr. See README.md.

    python3 tests/reference/bench/eager_vila_u.py --mode generate --preset configs/presets/tiny.yaml
"""

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eager_models as em  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Dense bf16 peaks (FLOP/s), matched in this order against torch.cuda.get_device_name().
PEAKS = [("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12)]
METRICS = {"generate": ["images_per_s", "llm_step_ms", "share_depth_transformer", "seconds"],
           "decode": ["tokens_per_s", "prefill_ms", "step_ms"],
           "train": ["tokens_per_s", "mfu", "step_ms", "params"]}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


class Clock:
    """Wall time of a section; waits for the GPU first, or the time would mean nothing."""

    def __init__(self, device):
        self.device = device

    def now(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def build(args, device, dtype, side=True):
    """The modules, created directly on the device in the target dtype; side=False leaves out
    all but the LLM (decode and LLM-only training never touch them)."""
    p = em.load_preset(args.preset, args.layers)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            llm = em.make_llm(p["llm"], args.llm_impl, args.attn)
            if not side:
                return p, llm, None, None, None
            depth = em.DepthTransformer(p["depth_transformer"], p["code_depth"],
                                        p["codebook_size"], p["code_dim"],
                                        p["llm"]["hidden_size"])
            codebooks = em.Codebooks(p["code_depth"], p["codebook_size"], p["code_dim"])
            proj = em.projector(p["code_dim"], p["llm"]["hidden_size"])
    finally:
        torch.set_default_dtype(previous)
    return p, llm, depth, codebooks, proj


def llm_module(llm):
    return llm.module if isinstance(llm, em.HfLlama) else llm


def prompt_ids(vocab, length):
    """Ids of the official prompts' usual lengths, as `vilau bench generate` makes them for a
    random model: cond has `length` text ids, uncond 10 fewer, both end in <im_start>."""
    cond = [1 if i == 0 else 3 + i % (vocab - 8) for i in range(length)]
    uncond = cond[:max(1, length - 10)]
    return cond + [vocab - 4], uncond + [vocab - 4]


def left_padded(rows, device):
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    ids, mask = ids.to(device), mask.to(device)
    # The official position ids: cumulative count of real tokens, padding at 1.
    positions = (mask.cumsum(1) - 1).masked_fill(mask == 0, 1)
    return ids, mask, positions


# --------------------------------------------------------------------------- generate

def generate_once(args, p, llm, depth, codebooks, proj, clock, times):
    cond, uncond = prompt_ids(p["llm"]["vocab_size"], args.prompt_length)
    device = next(proj.parameters()).device
    ids, mask, positions = left_padded([cond] * args.batch + [uncond] * args.batch, device)
    rows = ids.shape[0]
    start = clock.now()
    hidden, cache = llm.hidden(llm.embed(ids), positions, mask, None, use_cache=True)
    hidden = hidden[:, -1]
    times["prefill"] += clock.now() - start
    all_codes = []
    for t in range(p["tokens_per_image"]):
        start = clock.now()
        features, codes = depth.generate(hidden, codebooks, args.cfg)
        all_codes.append(codes[:args.batch])
        times["depth"] += clock.now() - start
        if t + 1 == p["tokens_per_image"]:
            break  # the last position's state would predict nothing
        start = clock.now()
        x = proj(features)[:, None]
        if args.dummy_text_token:
            # What HF's sample() does with the official patch: lm_head, a sampled token and
            # the "all rows finished?" check, a host sync, every step; the token is unused.
            probs = llm.logits(x[:, -1]).float().div(0.6).softmax(-1)
            token = torch.multinomial(probs, 1)
            if bool((token == 2).all()):
                log("all rows sampled </s>: the official loop would stop here")
        positions = positions[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones(rows, 1)], 1)
        hidden, cache = llm.hidden(x, positions, mask, cache, use_cache=True)
        hidden = hidden[:, -1]
        times["llm"] += clock.now() - start
        times["steps"] += 1
    return torch.stack(all_codes, 1)


def run_generate(args, device, dtype):
    p, llm, depth, codebooks, proj = build(args, device, dtype)
    for m in (llm_module(llm), depth, proj):
        m.eval()
    clock = Clock(device)
    torch.manual_seed(0)
    with torch.no_grad():
        warm = dict(prefill=0.0, llm=0.0, depth=0.0, steps=0)
        codes = generate_once(args, p, llm, depth, codebooks, proj, clock, warm)
        times = dict(prefill=0.0, llm=0.0, depth=0.0, steps=0)
        for _ in range(args.repeat):
            generate_once(args, p, llm, depth, codebooks, proj, clock, times)
    total = times["prefill"] + times["llm"] + times["depth"]
    positions = p["tokens_per_image"] * args.repeat
    return p, llm, {
        "tokens_per_image": p["tokens_per_image"], "code_depth": p["code_depth"],
        "cfg": args.cfg, "prompt_length": args.prompt_length,
        "dummy_text_token": args.dummy_text_token, "codes_shape": list(codes.shape),
        "images_per_s": args.batch * args.repeat / total,
        "llm_step_ms": 1e3 * times["llm"] / max(times["steps"], 1),
        "depth_ms": 1e3 * times["depth"] / positions,
        "position_ms": 1e3 * (times["llm"] + times["depth"]) / positions,
        "prefill_ms": 1e3 * times["prefill"] / args.repeat,
        "share_prefill": times["prefill"] / total, "share_llm": times["llm"] / total,
        "share_depth_transformer": times["depth"] / total, "seconds": total}


# --------------------------------------------------------------------------- decode

def decode_once(args, p, llm, device, clock, times):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, p["llm"]["vocab_size"] - 4, (args.batch, args.prompt_length),
                        generator=g).to(device)
    start = clock.now()
    hidden, cache = llm.hidden(llm.embed(ids), None, None, None, use_cache=True)
    token = llm.logits(hidden[:, -1]).argmax(-1)
    token.cpu()  # a streaming loop reads each token on the host, as C++ TextGenerator does
    times["prefill"] += clock.now() - start
    start = clock.now()
    for s in range(args.new_tokens):
        positions = torch.full((args.batch, 1), args.prompt_length + s, device=device)
        hidden, cache = llm.hidden(llm.embed(token[:, None]), positions, None, cache,
                                   use_cache=True)
        token = llm.logits(hidden[:, -1]).argmax(-1)
        token.cpu()
    times["steps"] += clock.now() - start


def run_decode(args, device, dtype):
    p, llm, _, _, _ = build(args, device, dtype, side=False)
    llm_module(llm).eval()
    clock = Clock(device)
    with torch.no_grad():
        decode_once(args, p, llm, device, clock, dict(prefill=0.0, steps=0.0))
        times = dict(prefill=0.0, steps=0.0)
        for _ in range(args.repeat):
            decode_once(args, p, llm, device, clock, times)
    return p, llm, {
        "prompt_length": args.prompt_length, "new_tokens": args.new_tokens,
        "tokens_per_s": args.batch * args.new_tokens * args.repeat / times["steps"],
        "prefill_ms": 1e3 * times["prefill"] / args.repeat,
        "step_ms": 1e3 * times["steps"] / (args.new_tokens * args.repeat),
        "seconds": times["prefill"] + times["steps"]}


# --------------------------------------------------------------------------- train

def peak_flops(device):
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAKS if key in name), None)


def train_step(args, p, llm, depth, codebooks, optimizer, device, g):
    c = p["llm"]
    ids = torch.randint(3, c["vocab_size"], (args.batch, args.seq_len), generator=g).to(device)
    hidden, _ = llm.hidden(llm.embed(ids))
    logits = llm.logits(hidden[:, :-1]).float()
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    visual = int(args.visual_fraction * (args.seq_len - 1))
    if visual > 0:
        # Depth-transformer loss on the first `visual` positions of each row, random codes.
        codes = torch.randint(0, p["codebook_size"], (args.batch * visual, p["code_depth"]),
                              generator=g).to(device)
        with torch.no_grad():
            sums = codebooks.embed(codes).cumsum(-2)[:, :-1]
        d_logits = depth(hidden[:, :visual].reshape(-1, c["hidden_size"]), sums).float()
        loss = loss + F.cross_entropy(d_logits.reshape(-1, d_logits.shape[-1]), codes.reshape(-1))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def run_train(args, device, dtype):
    p, llm, depth, codebooks, _ = build(args, device, dtype, side=args.visual_fraction > 0)
    model = llm_module(llm).train()
    params = [t for t in model.parameters() if t.requires_grad]
    if args.visual_fraction > 0:
        params += list(depth.train().parameters())
    cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=cuda or None, foreach=not cuda or None)
    clock, g = Clock(device), torch.Generator().manual_seed(2)
    # Two untimed steps: the first allocates AdamW's state and warms the allocator.
    for _ in range(2):
        train_step(args, p, llm, depth, codebooks, optimizer, device, g)
    start = clock.now()
    for _ in range(args.repeat):
        loss = train_step(args, p, llm, depth, codebooks, optimizer, device, g)
    seconds = clock.now() - start
    c = p["llm"]
    count = sum(t.numel() for t in params)
    # Matmul parameters: the input embedding is a lookup, not a matmul (a tied head is one).
    matmul = count - (0 if c["tie_word_embeddings"] else c["vocab_size"] * c["hidden_size"])
    per_token = 6 * matmul + 12 * c["num_layers"] * c["hidden_size"] * args.seq_len
    tokens_per_s = args.batch * args.seq_len * args.repeat / seconds
    peak = peak_flops(device)
    return p, llm, {
        "seq_len": args.seq_len, "layers": c["num_layers"], "visual_fraction": args.visual_fraction,
        "optimizer": "AdamW(fused)" if cuda else "AdamW(foreach)",
        "tokens_per_s": tokens_per_s, "step_ms": 1e3 * seconds / args.repeat, "params": count,
        "flops_per_token": per_token, "peak_flops": peak,
        "mfu": per_token * tokens_per_s / peak if peak else None,
        "loss": loss.item(), "seconds": seconds}


# --------------------------------------------------------------------------- driver

def run(args):
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    torch.manual_seed(0)
    runner = {"generate": run_generate, "decode": run_decode, "train": run_train}[args.mode]
    p, llm, metrics = runner(args, device, dtype)
    try:
        import transformers
        tf_version = transformers.__version__
    except ImportError:
        tf_version = None
    report = {
        "impl": "eager-pytorch", "mode": args.mode, "preset": args.preset, "model": p["name"],
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype, "batch": args.batch, "repeat": args.repeat,
        "torch_version": torch.__version__, "transformers_version": tf_version,
        "llm_impl": llm.impl, "attn_implementation": llm.attn_implementation,
        "llm_layers": p["llm"]["num_layers"], "threads": torch.get_num_threads()}
    report.update(metrics)
    return report


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["generate", "decode", "train"], default="generate")
    ap.add_argument("--preset", default="configs/presets/tiny.yaml",
                    help="a YAML preset (its `model:` section) or a name under configs/presets")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--batch", type=int, default=1,
                    help="images (generate; twice the LLM rows with CFG) or sequences")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs after one warm-up")
    ap.add_argument("--prompt-length", type=int, default=48)
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--layers", type=int, default=None, help="override the LLM layer count")
    ap.add_argument("--visual-fraction", type=float, default=0.0,
                    help="train: share of positions that also get the depth-transformer loss")
    ap.add_argument("--dummy-text-token", action="store_true",
                    help="generate: also run lm_head and sample the unused text token each step, "
                         "as the official HF loop does")
    ap.add_argument("--llm-impl", choices=["auto", "hf", "builtin"], default="auto")
    ap.add_argument("--attn", choices=["auto", "eager", "sdpa"], default="auto",
                    help="HF attention implementation (auto: transformers' default)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (torch default)")
    ap.add_argument("--self-test", action="store_true",
                    help="check the builtin LLaMA against transformers and the depth transformer "
                         "against the official fixture, then exit")
    ap.add_argument("--check", action="store_true",
                    help="self-test plus every mode on the tiny preset, CPU fp32, batch 2")
    return ap.parse_args(argv)


def main():
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    elif args.check:
        # The check tests correctness, not speed; on a loaded machine several OpenMP threads
        # can make the tiny model 100x slower.
        torch.set_num_threads(1)
    if args.self_test or args.check:
        import selftest
        result = selftest.run_all(args, parse, run, METRICS) if args.check else selftest.run(args)
        print(json.dumps(result, indent=2))
        sys.exit(0 if result["ok"] else 1)
    report = run(args)
    bad = [k for k in METRICS[args.mode] if report[k] is not None
           and not math.isfinite(report[k])]
    if bad:
        log("non-finite metrics:", bad)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
