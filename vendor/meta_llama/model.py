"""Meta's multi-token-prediction LLaMA (facebook/multi-token-prediction, `7B_1T_4`): our own implementation.

The state-dict keys and the layer bookkeeping are Meta's, so a published `consolidated.pth` loads unchanged:

    tok_embeddings.weight
    layers.{i}.attention.{wq,wk,wv,wo}.weight         i < n_layers - n_future_tokens + 1
    layers.{i}.feed_forward.{w1,w2,w3}.weight
    layers.{i}.{attention_norm,ffn_norm}.weight
    extra_heads.{j}.<same as a layer>                 j < n_future_tokens - 1
    norm.weight, output.weight

The trunk is `layers[:-1]`; head 0 (next token) is `layers[-1]`; head k >= 1 is `extra_heads[k-1]`. Every head
reads the same trunk output and goes through the shared `norm` and `output`.

Unlike Meta's reference code (fairscale, `torch.inference_mode`), this one trains, runs on CPU or GPU, uses
`scaled_dot_product_attention`, supports grouped KV heads, and has an optional KV cache for decoding
(`setup_cache` / `clear_cache`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, asdict
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["REQUIRED_PARAMS", "ModelArgs", "RMSNorm", "Attention", "FeedForward", "TransformerBlock", "Transformer", "ffn_hidden_dim",
           "precompute_rope", "apply_rope"]


# Keys every params.json must hold (SPEC §4): a default for them would build a different model and the error would then
# blame the weights. n_kv_heads, ffn_dim_multiplier and rope_theta are optional (Meta's defaults).
REQUIRED_PARAMS = ("dim", "n_layers", "n_heads", "vocab_size", "multiple_of", "norm_eps", "n_future_tokens")
_RUNTIME_ONLY = ("max_batch_size", "max_seq_len")  # cache sizes, not part of params.json


@dataclass
class ModelArgs:
    "Meta's `params.json`, with Meta's defaults for the optional keys."
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: Optional[int] = None
    vocab_size: int = -1
    multiple_of: int = 256
    ffn_dim_multiplier: Optional[float] = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    n_future_tokens: int = 1
    max_batch_size: int = 32
    max_seq_len: int = 2048

    def __post_init__(self):
        if self.vocab_size <= 0:
            raise ValueError(f"ModelArgs: vocab_size must be positive, got {self.vocab_size}")
        if self.dim % self.n_heads:
            raise ValueError(f"ModelArgs: dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if (self.dim // self.n_heads) % 2:
            raise ValueError(f"ModelArgs: head dim {self.dim // self.n_heads} must be even (rotary pairs)")
        kv = self.n_kv_heads or self.n_heads
        if self.n_heads % kv:
            raise ValueError(f"ModelArgs: n_heads {self.n_heads} is not a multiple of n_kv_heads {kv}")
        if not 1 <= self.n_future_tokens <= self.n_layers:
            raise ValueError(f"ModelArgs: n_future_tokens {self.n_future_tokens} must be in 1..n_layers ({self.n_layers})")

    @classmethod
    def from_params(cls, params: dict | str | Path, **overrides) -> "ModelArgs":
        "Build from a `params.json` path or dict; missing required keys, unknown keys and mistyped values are errors naming them and the file."
        src = "params"
        if not isinstance(params, dict):
            src = str(params)
            p = Path(params)
            if not p.is_file():
                raise FileNotFoundError(f"params.json not found: {p}")
            try:
                params = json.loads(p.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}: not valid JSON ({e})") from None
        params = {**params, **overrides}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"{src}: unknown key(s) {unknown}; known keys: {sorted(known)}")
        missing = [k for k in REQUIRED_PARAMS if k not in params]
        if missing:
            optional = sorted(known - set(REQUIRED_PARAMS) - set(_RUNTIME_ONLY))
            raise ValueError(f"{src}: missing required key(s) {missing} (required: {sorted(REQUIRED_PARAMS)}; optional: {optional})")
        for f in fields(cls):
            v = params.get(f.name)
            if f.name not in params or (v is None and f.type.startswith("Optional")): continue
            if "int" in f.type and (isinstance(v, bool) or not isinstance(v, int)):
                raise ValueError(f"{src}: {f.name!r} must be an integer, got {v!r}")
            if "float" in f.type and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"{src}: {f.name!r} must be a number, got {v!r}")
        return cls(**params)

    def to_params(self) -> dict:
        "The dict written as `params.json` (without the runtime-only cache sizes)."
        d = asdict(self)
        d.pop("max_batch_size"); d.pop("max_seq_len")
        return d

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads


def ffn_hidden_dim(dim: int, multiple_of: int, ffn_dim_multiplier: Optional[float]) -> int:
    "Meta's SwiGLU width: multiple_of * ceil(int(2 * 4 * dim / 3) * ffn_dim_multiplier / multiple_of)."
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def precompute_rope(head_dim: int, positions: torch.Tensor, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    "cos, sin `[S, head_dim/2]` (float32) for the given absolute positions."
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    ang = positions.to(torch.float32)[:, None] * inv[None, :]  # [S, hd/2]
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    "Rotate interleaved pairs (x[2i], x[2i+1]) of `x` `[B, S, H, hd]` by the position angle (Meta's complex layout)."
    xf = x.float().reshape(*x.shape[:-1], -1, 2)  # [B, S, H, hd/2, 2]
    a, b = xf[..., 0], xf[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out = torch.stack((a * c - b * s, a * s + b * c), dim=-1)
    return out.flatten(-2).type_as(x)


class RMSNorm(nn.Module):
    "x / rms(x) * weight, computed in float32 then cast back (Meta's)."
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return out.type_as(x) * self.weight


class Attention(nn.Module):
    "Multi-head attention with rotary embeddings, grouped KV heads and an optional KV cache."
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.kv_heads, args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * self.head_dim, args.dim, bias=False)
        self.cache_k: Optional[torch.Tensor] = None  # [B_max, S_max, n_kv, hd]
        self.cache_v: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor, start_pos: int, cos: torch.Tensor, sin: torch.Tensor,
                mask: Optional[torch.Tensor]) -> torch.Tensor:
        B, S, _ = x.shape
        q = self.wq(x).view(B, S, self.n_heads, self.head_dim)
        k = self.wk(x).view(B, S, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(B, S, self.n_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.cache_k is not None:
            if B > self.cache_k.shape[0] or start_pos + S > self.cache_k.shape[1]:
                raise ValueError(f"KV cache holds batch {self.cache_k.shape[0]} x {self.cache_k.shape[1]} positions; "
                                 f"got batch {B} at positions {start_pos}..{start_pos + S - 1}")
            self.cache_k[:B, start_pos:start_pos + S] = k.to(self.cache_k.dtype)
            self.cache_v[:B, start_pos:start_pos + S] = v.to(self.cache_v.dtype)
            k, v = self.cache_k[:B, :start_pos + S].to(q.dtype), self.cache_v[:B, :start_pos + S].to(q.dtype)
        elif start_pos:
            raise ValueError("start_pos > 0 needs a KV cache (call Transformer.setup_cache first)")
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, S, hd]
        if self.n_kv_heads != self.n_heads:
            rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if mask is None:  # plain causal attention from position 0, or one new token attending to everything
            out = F.scaled_dot_product_attention(q, k, v, is_causal=(S > 1 and start_pos == 0))
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.wo(out.transpose(1, 2).reshape(B, S, -1))


class FeedForward(nn.Module):
    "SwiGLU: w2(silu(w1 x) * w3 x)."
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    "Pre-norm block: h = x + attn(norm(x)); out = h + ffn(norm(h))."
    def __init__(self, layer_id: int, args: ModelArgs):
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args.dim, ffn_hidden_dim(args.dim, args.multiple_of, args.ffn_dim_multiplier))
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)

    def forward(self, x: torch.Tensor, start_pos: int, cos: torch.Tensor, sin: torch.Tensor,
                mask: Optional[torch.Tensor]) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), start_pos, cos, sin, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    "Meta's MTP transformer: a shared trunk, n_future_tokens head blocks, a shared final norm and output projection."
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.params = args
        self.vocab_size, self.n_layers, self.n_future_tokens = args.vocab_size, args.n_layers, args.n_future_tokens
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        n_main = args.n_layers - args.n_future_tokens + 1  # trunk blocks + head 0
        self.layers = nn.ModuleList(TransformerBlock(i, args) for i in range(n_main))
        self.extra_heads = nn.ModuleList(TransformerBlock(n_main + j, args) for j in range(args.n_future_tokens - 1))
        self.norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)

    @property
    def trunk(self) -> list[TransformerBlock]:
        return list(self.layers[:-1])

    @property
    def heads(self) -> list[TransformerBlock]:
        "Head blocks in prediction order: head k predicts token t+k+1."
        return [self.layers[-1], *self.extra_heads]

    def init_weights(self, seed: int = 0, std: float = 0.02) -> "Transformer":
        "Deterministic random init (normal(0, std) matrices, unit norms), independent of the global RNG."
        g = torch.Generator(device="cpu").manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():  # named_parameters order is fixed by the module structure
                if name.endswith("norm.weight"):
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * std)
        return self

    # ---- KV cache --------------------------------------------------------------------------------------------------
    def setup_cache(self, max_batch_size: int, max_seq_len: int, device=None, dtype=None) -> None:
        "Allocate a KV cache in every block (trunk and heads) for incremental decoding."
        p = self.tok_embeddings.weight
        for blk in [*self.layers, *self.extra_heads]:
            a = blk.attention
            shape = (max_batch_size, max_seq_len, a.n_kv_heads, a.head_dim)
            a.cache_k = torch.zeros(shape, device=device or p.device, dtype=dtype or p.dtype)
            a.cache_v = torch.zeros_like(a.cache_k)

    def clear_cache(self) -> None:
        "Drop the KV cache (back to plain training / full-sequence mode)."
        for blk in [*self.layers, *self.extra_heads]:
            blk.attention.cache_k = blk.attention.cache_v = None

    # ---- forward ---------------------------------------------------------------------------------------------------
    def rope(self, start_pos: int, seqlen: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        pos = torch.arange(start_pos, start_pos + seqlen, device=device)
        return precompute_rope(self.params.head_dim, pos, self.params.rope_theta)

    def attention_mask(self, start_pos: int, seqlen: int, device, key_mask: Optional[torch.Tensor] = None):
        "Bool mask `[B|1, 1, S, T]` (True = attend) or None when plain causal attention does."
        if key_mask is None and (start_pos == 0 or seqlen == 1):
            return None
        T = start_pos + seqlen
        qpos = torch.arange(start_pos, T, device=device)[:, None]
        kpos = torch.arange(T, device=device)[None, :]
        m = (kpos <= qpos)[None, None]  # [1, 1, S, T]
        if key_mask is not None:
            if key_mask.shape[-1] != T:
                raise ValueError(f"attention_mask covers {key_mask.shape[-1]} positions, expected start_pos + S = {T}")
            # padding keys are hidden; a token always sees itself, so a padded row never becomes all -inf (NaN)
            m = m & (key_mask.bool()[:, None, None, :] | (kpos == qpos)[None, None])
        return m

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tok_embeddings(tokens)

    def forward_trunk(self, tokens: torch.Tensor, start_pos: int = 0,
                      attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        "Raw trunk output `[B, S, D]` (input of every head)."
        B, S = tokens.shape
        h = self.embed(tokens)
        cos, sin = self.rope(start_pos, S, tokens.device)
        mask = self.attention_mask(start_pos, S, tokens.device, attention_mask)
        for layer in self.layers[:-1]:
            h = layer(h, start_pos, cos, sin, mask)
        return h

    def forward_head(self, h_trunk: torch.Tensor, k: int, start_pos: int = 0,
                     attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        "Head k's final hidden state `[B, S, D]` before the shared norm."
        S = h_trunk.shape[1]
        cos, sin = self.rope(start_pos, S, h_trunk.device)
        mask = self.attention_mask(start_pos, S, h_trunk.device, attention_mask)
        return self.heads[k](h_trunk, start_pos, cos, sin, mask)

    def forward(self, tokens: torch.Tensor, start_pos: int = 0, return_all_heads: bool = False,
                attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        "Logits `[B, S, n_heads_used, V]` in float32 (Meta's): head 0 only, or all heads with `return_all_heads`."
        h = self.forward_trunk(tokens, start_pos, attention_mask)
        n_used = self.n_future_tokens if return_all_heads else 1
        latents = [self.forward_head(h, k, start_pos, attention_mask) for k in range(n_used)]
        h = self.norm(torch.stack(latents, dim=-2))  # [B, S, n_used, D]
        return self.output(h).float()  # [B, S, n_used, V]
