"""A hook-free copy of GPT's forward, the baseline of the "idle hooks" rows: `without_hooks(model)`.

The same module tree, each forward rebound to a copy of model.py's forward with every HookPoint call (and the
`.fns` tests) deleted. nn.Module call overhead stays; only the hooks go. `without_hooks` checks the copy still
computes exactly what GPT computes, so a change in model.py cannot silently make this baseline unfair (and
fails loudly instead: then copy the change into the _bare_* functions here).

Timing it against GPT is suite.py's job.
"""

from __future__ import annotations

import copy
import types

import torch
import torch.nn.functional as F

from ..layers import LayerNorm, RMSNorm
from ..model import GPT, MLP, Block, CausalSelfAttention, apply_rotary, causal_mask


def _bare_attention(self, x, kv_cache=None, rope=None):
    B, T, C = x.size()
    nh, nkv, hs = self.n_head, self.n_kv_head, self.head_size
    q, k, v = self.c_attn(x).split((self.q_size, self.kv_size, self.kv_size), dim=2)
    q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
    k = k.view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
    v = v.view(B, T, nkv, hs).transpose(1, 2)
    if rope is not None:
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
    past = 0
    if kv_cache is not None:
        past = kv_cache.pos
        k, v = kv_cache.update(self.layer, k, v)  # (B, nkv, Tk, hs)
    p = self.dropout if self.training else 0.0
    gqa = nkv != nh
    if past == 0:
        z = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, enable_gqa=gqa)
    elif T == 1:
        z = F.scaled_dot_product_attention(q, k, v, dropout_p=p, enable_gqa=gqa)
    else:
        z = F.scaled_dot_product_attention(
            q, k, v, attn_mask=causal_mask(T, past, q.device), dropout_p=p, enable_gqa=gqa
        )
    y = self.c_proj(z.transpose(1, 2).reshape(B, T, self.q_size))
    return self.resid_dropout(y) if self.training and self.dropout else y


def _bare_mlp(self, x):
    h = self.c_fc(x)
    if self.gated:
        gate, up = h.chunk(2, dim=-1)  # (B, T, n_inner) each
        h = self.act(gate) * up
    else:
        h = self.act(h)
    y = self.c_proj(h)
    return self.dropout(y) if self.training and self.p_dropout else y


def _bare_block(self, x, kv_cache=None, rope=None):
    if self.parallel:
        return x + self.attn(self.ln_1(x), kv_cache, rope) + self.mlp(self.ln_2(x))
    x = x + self.attn(self.ln_1(x), kv_cache, rope)
    if self.mlp is not None:
        x = x + self.mlp(self.ln_2(x))
    return x


def _bare_trunk(self, idx, kv_cache=None):
    past = kv_cache.pos if kv_cache is not None else 0
    self._check_input(idx, past)
    T = idx.size(1)
    x = self.wte(idx)
    if self.config.pos_encoding == "learned":
        x = x + self.wpe(torch.arange(past, past + T, device=idx.device))
    elif self.config.pos_encoding == "sinusoidal":
        x = x + self.pe[past : past + T].to(x.dtype)
    rope = None
    if self.config.pos_encoding == "rotary":
        rope = (self.rope_cos[past : past + T].to(x.dtype), self.rope_sin[past : past + T].to(x.dtype))  # (T, rd)
    if self.training and self.config.dropout:
        x = self.drop(x)
    for block in self.blocks:
        x = block(x, kv_cache, rope)
    if kv_cache is not None:
        kv_cache.advance(T)
    return self.ln_f(x)


def _bare_layernorm(self, x):
    return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


def _bare_rmsnorm(self, x):
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
    return self.weight * h.to(x.dtype)


def _bare_forward(self, idx, kv_cache=None):
    return self.lm_head(self.trunk(idx, kv_cache))


def without_hooks(model: GPT) -> GPT:
    """A copy of `model` whose forward passes never touch a HookPoint (same modules, same weights)."""
    bare = copy.deepcopy(model)
    bare_fns = [(CausalSelfAttention, _bare_attention), (MLP, _bare_mlp), (Block, _bare_block)]
    # the norms carry hook points too (hook_scale, hook_normalized)
    bare_fns += [(LayerNorm, _bare_layernorm), (RMSNorm, _bare_rmsnorm)]
    for mod in bare.modules():
        for cls, fn in bare_fns:
            if type(mod) is cls:
                mod.forward = types.MethodType(fn, mod)
    bare.trunk = types.MethodType(_bare_trunk, bare)
    bare.forward = types.MethodType(_bare_forward, bare)
    x = torch.randint(0, model.config.vocab_size, (2, 8), device=model.device)
    with torch.no_grad():
        if not torch.equal(bare(x), model(x)):
            raise RuntimeError(
                "bench's hook-free copy of GPT.forward no longer matches gptviz/model.py; "
                "update the _bare_* functions in gptviz/bench/bare.py"
            )
    return bare
