"""Modules for the eager PyTorch baseline (see README.md): the LLaMA backbone (Hugging Face
transformers when it imports, else a small built-in one with the same parameter names), the
depth transformer with the official cache-less generation loop, the mlp2x_gelu projector and
the per-depth codebooks. Written for speed measurement; weights are random."""

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


# --------------------------------------------------------------------------- preset

def load_preset(path, layers=None):
    """The `model:` section of one of our YAML presets, with the defaults of
    include/vilau/*/config.h filled in. `path` may also be a bare preset name."""
    import yaml
    if not os.path.exists(path):
        named = os.path.join(REPO_ROOT, "configs", "presets", path + ".yaml")
        path = named if os.path.exists(named) else path
    with open(path) as f:
        model = yaml.safe_load(f)["model"]
    llm = dict(rms_norm_eps=1e-5, rope_theta=10000.0, rope_scaling_factor=1.0,
               tie_word_embeddings=False)
    llm.update(model["llm"])
    if layers:
        llm["num_layers"] = layers
    vision = model["vision_tower"]["vision"]
    quantizer = dict(codebook_size=16384)
    quantizer.update(model["vision_tower"]["quantizer"])
    depth = dict(resid_dropout=0.1, attn_dropout=0.0)
    depth.update(model["depth_transformer"])
    return dict(name=model.get("name", os.path.basename(path)), llm=llm, depth_transformer=depth,
                codebook_size=quantizer["codebook_size"], code_depth=quantizer["depth"],
                # the code vectors are SigLIP features, so the code width is the SigLIP width
                code_dim=vision["hidden_size"],
                tokens_per_image=(vision["image_size"] // vision["patch_size"]) ** 2)


# --------------------------------------------------------------------------- LLaMA

class RMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        # Normalised in fp32 and cast back before the gain, as LLaMA's reference code does.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_tables(positions, head_dim, theta, factor, dtype):
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device,
                                            dtype=torch.float32) / head_dim)
    # Linear scaling divides the positions, not the frequencies.
    angles = (positions.float() / factor)[..., None] * inv_freq
    angles = torch.cat([angles, angles], -1)[:, None]  # [B, 1, T, head_dim]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads, self.kv_heads = c["num_heads"], c["num_kv_heads"]
        self.head_dim = c["hidden_size"] // self.heads
        h = c["hidden_size"]
        self.q_proj = nn.Linear(h, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(h, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(h, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, h, bias=False)

    def forward(self, x, cos, sin, mask, cache):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            # A growing concatenation, as Hugging Face's DynamicCache keeps it.
            if cache:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[:] = [k, v]
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, 1)
            v = v.repeat_interleave(self.heads // self.kv_heads, 1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           is_causal=mask is None and t > 1)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, i = c["hidden_size"], c["intermediate_size"]
        self.self_attn = Attention(c)
        self.mlp = nn.Module()
        self.mlp.gate_proj = nn.Linear(h, i, bias=False)
        self.mlp.up_proj = nn.Linear(h, i, bias=False)
        self.mlp.down_proj = nn.Linear(i, h, bias=False)
        self.input_layernorm = RMSNorm(h, c["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(h, c["rms_norm_eps"])

    def forward(self, x, cos, sin, mask, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        m, y = self.mlp, self.post_attention_layernorm(x)
        return x + m.down_proj(F.silu(m.gate_proj(y)) * m.up_proj(y))


class BuiltinLlama(nn.Module):
    """Used where transformers is missing. Parameter names are Hugging Face's, so the
    self-test can load one model's weights into the other."""
    impl = "builtin-eager"
    attn_implementation = "sdpa"

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.model.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c["num_layers"]))
        self.model.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        if c["tie_word_embeddings"]:
            self.lm_head.weight = self.model.embed_tokens.weight
        for m in self.modules():  # the 0.02 normal init of Hugging Face's LLaMA
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def embed(self, ids):
        return self.model.embed_tokens(ids)

    def logits(self, hidden):
        return self.lm_head(hidden)

    def hidden(self, embeds, positions=None, mask=None, cache=None, use_cache=False):
        """Final-norm hidden states and the cache. mask: [B, past + T] with 0 at padding."""
        b, t, _ = embeds.shape
        if use_cache and cache is None:
            cache = [[] for _ in self.model.layers]
        past = cache[0][0].shape[2] if cache and cache[0] else 0
        if positions is None:
            positions = torch.arange(past, past + t, device=embeds.device).expand(b, t)
        cos, sin = rope_tables(positions, embeds.shape[-1] // self.c["num_heads"],
                               self.c["rope_theta"], self.c["rope_scaling_factor"], embeds.dtype)
        attn_mask = None
        if mask is not None:
            query = torch.arange(past, past + t, device=embeds.device)[:, None]
            key = torch.arange(past + t, device=embeds.device)[None]
            attn_mask = (mask.bool()[:, None, None] & (key <= query)) | (key == query)
            # A padding query sees itself: a row with nothing visible would turn to NaN and
            # poison the valid rows through its keys and values.
        x = embeds
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, attn_mask, cache[i] if use_cache else None)
        return self.model.norm(x), cache


class HfLlama:
    """transformers' LlamaForCausalLM behind the same four calls as BuiltinLlama."""
    impl = "hf-transformers"

    def __init__(self, c, attn="auto"):
        from transformers import LlamaConfig, LlamaForCausalLM
        rope = ({"type": "linear", "factor": c["rope_scaling_factor"]}
                if c["rope_scaling_factor"] != 1.0 else None)
        config = LlamaConfig(
            vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
            intermediate_size=c["intermediate_size"], num_hidden_layers=c["num_layers"],
            num_attention_heads=c["num_heads"], num_key_value_heads=c["num_kv_heads"],
            max_position_embeddings=c["max_position_embeddings"], rms_norm_eps=c["rms_norm_eps"],
            rope_theta=c["rope_theta"], rope_scaling=rope,
            tie_word_embeddings=c["tie_word_embeddings"], pad_token_id=0, bos_token_id=1,
            eos_token_id=2)
        if attn != "auto":
            config._attn_implementation = attn
        self.module = LlamaForCausalLM(config)
        self.attn_implementation = self.module.config._attn_implementation

    def embed(self, ids):
        return self.module.model.embed_tokens(ids)

    def logits(self, hidden):
        return self.module.lm_head(hidden)

    def hidden(self, embeds, positions=None, mask=None, cache=None, use_cache=False):
        out = self.module.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                past_key_values=cache, use_cache=use_cache, return_dict=True)
        return out.last_hidden_state, out.past_key_values


def make_llm(c, impl="auto", attn="auto"):
    """impl: auto (transformers if it imports), hf or builtin."""
    if impl in ("auto", "hf"):
        try:
            import transformers  # noqa: F401
            return HfLlama(c, attn)
        except ImportError:
            if impl == "hf":
                raise
    return BuiltinLlama(c)


# --------------------------------------------------------------------------- depth side

class DepthAttention(nn.Module):
    def __init__(self, e, heads, attn_dropout, resid_dropout):
        super().__init__()
        self.key, self.query, self.value, self.proj = (nn.Linear(e, e) for _ in range(4))
        self.heads, self.attn_dropout, self.resid_dropout = heads, attn_dropout, resid_dropout

    def forward(self, x):
        b, t, e = x.shape
        q, k, v = (m(x).view(b, t, self.heads, e // self.heads).transpose(1, 2)
                   for m in (self.query, self.key, self.value))
        # Plain matmul-softmax, with the keys scaled before the product, as the official
        # attention is written; its mask is a causal triangle over the depth axis.
        logits = q @ (k.transpose(-2, -1) * (1.0 / math.sqrt(e // self.heads)))
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        probs = F.dropout(logits.masked_fill(~causal, float("-inf")).softmax(-1),
                          self.attn_dropout, self.training)
        y = self.proj((probs @ v).transpose(1, 2).reshape(b, t, e))
        return F.dropout(y, self.resid_dropout, self.training)


class DepthBlock(nn.Module):
    def __init__(self, e, heads, attn_dropout, resid_dropout):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(e), nn.LayerNorm(e)
        self.attn = DepthAttention(e, heads, attn_dropout, resid_dropout)
        self.mlp = nn.Sequential(nn.Linear(e, 4 * e), nn.GELU(), nn.Linear(4 * e, e),
                                 nn.Dropout(resid_dropout))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


def sample_official(logits, top_k=900, top_p=0.96, temperature=1.0):
    """The official depth sampler: fp32, top-k, NaN scrub, softmax, top-p, multinomial."""
    logits = logits.float() / temperature
    kth = torch.topk(logits, min(top_k, logits.shape[-1]), -1).values[:, -1:]
    logits = logits.masked_fill(logits < kth, float("-inf"))
    # The official code tests for NaN with a Python `if`, a host sync at every depth; kept.
    if torch.isnan(logits).any():
        logits = logits.nan_to_num(nan=float("-inf"))
    probs = logits.softmax(-1)
    sorted_probs, order = probs.sort(-1, descending=True)
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the tokens ranked above
    drop_sorted = before >= top_p
    drop_sorted[:, 0] = False
    probs = probs.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), 0.0)
    probs = probs / probs.sum(-1, keepdim=True)
    return torch.multinomial(probs, 1).view(-1)


class Codebooks(nn.Module):
    """The vision tower's D codebooks, looked up one depth at a time as the official
    get_code_emb_with_depth does."""

    def __init__(self, depth, size, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(depth, size, dim), requires_grad=False)

    def embed(self, codes):  # [..., D] -> [..., D, C]
        return torch.stack([self.weight[d][codes[..., d]] for d in range(codes.shape[-1])], -2)


class DepthTransformer(nn.Module):
    """The RQTransformer head, official parameter names."""

    def __init__(self, c, depth, codebook_size, code_dim, llm_hidden):
        super().__init__()
        e = c["embed_dim"]
        self.depth = depth
        self.in_mlp_1 = nn.Linear(code_dim, e)
        self.in_mlp_2 = nn.Linear(llm_hidden, e)
        self.head_transformer = nn.Module()
        self.head_transformer.blocks = nn.ModuleList(
            DepthBlock(e, c["num_heads"], c["attn_dropout"], c["resid_dropout"])
            for _ in range(c["num_layers"]))
        self.pos_emb_d = nn.Parameter(torch.randn(1, depth, e) * 0.02)
        self.classifier_mlp = nn.Sequential()
        self.classifier_mlp.add_module("layer_norm", nn.LayerNorm(e))
        self.classifier_mlp.add_module("linear", nn.Linear(e, codebook_size))

    def run(self, x):
        for block in self.head_transformer.blocks:
            x = block(x)
        return self.classifier_mlp(x)

    def forward(self, hidden, code_prefix_sums):
        """Teacher forcing: hidden [N, H], code_prefix_sums [N, D-1, C] -> logits [N, D, K]."""
        x = torch.cat([self.in_mlp_2(hidden)[:, None], self.in_mlp_1(code_prefix_sums)], 1)
        return self.run(x + self.pos_emb_d)

    def generate(self, hidden, codebooks, cfg, sampler=sample_official, raw=None):
        """The official loop for one image position. hidden [2N, H]: conditional rows, then
        their unconditional twins. At each depth the whole prefix is run again (no cache).
        Returns the summed code vectors [2N, C] and the codes [2N, D] (both halves equal)."""
        n = hidden.shape[0] // 2
        h = self.in_mlp_2(hidden)[:, None]
        codes = None
        for d in range(self.depth):
            x = h
            if d > 0:
                prefix = codebooks.embed(codes).cumsum(-2)[:, :d]
                x = torch.cat([h, self.in_mlp_1(prefix)], 1)
            logits = self.run(x + self.pos_emb_d[:, :d + 1])[:, -1]
            if raw is not None:
                raw.append(logits)
            guided = logits[n:] + cfg * (logits[:n] - logits[n:])
            chosen = sampler(guided)
            if codes is None:  # the official loop fills every depth with the first code
                codes = chosen[:, None].repeat(2, self.depth)
            else:
                codes[:, d] = chosen.repeat(2)
        return codebooks.embed(codes).sum(-2), codes


def projector(code_dim, llm_hidden):
    """mlp2x_gelu; Sequential indices match the official `layers.0` / `layers.2`."""
    return nn.Sequential(nn.Linear(code_dim, llm_hidden), nn.GELU(),
                         nn.Linear(llm_hidden, llm_hidden))
