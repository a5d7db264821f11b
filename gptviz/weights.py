"""Weights under TransformerLens's names and shapes: `model.W_Q` (L, nh, C, hs), `model.W_U` (C, V), ...

gptviz stores weights as nanoGPT does: `nn.Linear`'s (out, in) layout, q, k and v of all heads in one `c_attn`,
a gated MLP's gate and up halves in one `c_fc` (in memory each weight holds its transpose, for decoding speed:
`gptviz.model.store_weights_transposed`; shapes and views are as described here). TransformerLens stores one
tensor per role, multiplied on the right (`q[h] = x @ W_Q[h] + b_Q[h]`). These properties give TransformerLens's
spelling over gptviz's parameters:

- per layer (`AttentionWeights`, `MLPWeights`: mixins for the attention and MLP modules, read as
  `model.blocks[l].attn.W_Q` / `.mlp.W_in` when mixed in): views. A
  slice of c_attn, a `view` into heads and a transpose share storage with the parameter, so an edit made
  through a view under `torch.no_grad()` edits the model (zeroing one head's W_O, say).
- model level (`WeightViews` on GPT): `W_E`, `W_pos`, `W_U` are views; `W_Q`, `W_O`, `W_in`, ... stack the
  per-layer views over L, as TransformerLens does, and are therefore copies (torch.stack cannot view L
  separate parameters). Read them; edit through the per-layer views.
- copies even per layer: with grouped-query attention `W_K`, `W_V`, `b_K`, `b_V` repeat each key/value head for
  the nh/nkv query heads that read it (TransformerLens's convention); `_W_K`, `_W_V`, `_b_K`, `_b_V` hold the
  nkv heads themselves, as views. A bias the model does not have (`b_Q` when qkv_bias=False; `b_U` always) is a
  new tensor of zeros, as TransformerLens's zero-initialised biases read.

This module only looks at parameters; it never runs the model and never imports `gptviz.model` (GPT inherits
`WeightViews`). `gptviz.transformer_lens` moves weights to and from TransformerLens through these views.
"""

from __future__ import annotations

import torch

__all__ = ["AttentionWeights", "MLPWeights", "WeightViews"]


def _zeros(like: torch.Tensor, *shape: int) -> torch.Tensor:
    return torch.zeros(shape, dtype=like.dtype, device=like.device)


# The properties below call only these module-level helpers, never each other: model-level stacks call a
# property's getter on a block's module directly, so they work on any module with these attributes.
def _heads(rows: torch.Tensor, n: int) -> torch.Tensor:
    """(n * hs, C) rows of an nn.Linear weight -> (n, C, hs), a view: head h multiplies x on the right."""
    return rows.view(n, -1, rows.shape[-1]).transpose(1, 2)


def _kv_rows(attn, which: int) -> torch.Tensor:
    """(nkv, C, hs) view of the key (which=0) or value (which=1) heads as c_attn stores them."""
    start = attn.q_size + which * attn.kv_size
    return _heads(attn.c_attn.weight[start : start + attn.kv_size], attn.n_kv_head)


def _qkv_bias(attn, start: int, size: int, n: int) -> torch.Tensor:
    """(n, hs) view of c_attn's bias rows [start, start + size), or zeros without q/k/v biases."""
    bias = attn.c_attn.bias
    if bias is None:
        return _zeros(attn.c_attn.weight, n, size // n)
    return bias[start : start + size].view(n, -1)


def _per_query_head(attn, kv: torch.Tensor) -> torch.Tensor:
    """(nkv, ...) -> (nh, ...): each key/value head repeated for its query heads (a copy), or kv itself."""
    group = attn.n_head // attn.n_kv_head
    return kv if group == 1 else kv.repeat_interleave(group, dim=0)


def _out_bias(module) -> torch.Tensor:
    """(C,) c_proj's bias (the parameter itself), or zeros."""
    bias = module.c_proj.bias
    return bias if bias is not None else _zeros(module.c_proj.weight, module.c_proj.weight.shape[0])


def _fc_rows(mlp, up: bool) -> torch.Tensor:
    """(n_inner, C) rows of c_fc: all of them, or a gated MLP's up (up=True) or gate half ([gate; up])."""
    weight = mlp.c_fc.weight
    if not mlp.gated:
        return weight
    n = weight.shape[0] // 2
    return weight[n:] if up else weight[:n]


def _fc_bias(mlp, up: bool) -> torch.Tensor:
    """(n_inner,) view of c_fc's bias (gated: the up or gate half), or zeros."""
    n = mlp.c_proj.weight.shape[1]
    bias = mlp.c_fc.bias
    if bias is None:
        return _zeros(mlp.c_fc.weight, n)
    if not mlp.gated:
        return bias
    return bias[n:] if up else bias[:n]


class AttentionWeights:
    """TransformerLens's attention weights over CausalSelfAttention's `c_attn` (q, k, v rows) and `c_proj`.

    Reads `c_attn`, `c_proj`, `n_head`, `n_kv_head`, `q_size`, `kv_size` from the module it is mixed into.
    """

    @property
    def W_Q(self) -> torch.Tensor:
        """(nh, C, hs) view: head h's query is x @ W_Q[h] + b_Q[h]."""
        return _heads(self.c_attn.weight[: self.q_size], self.n_head)

    @property
    def _W_K(self) -> torch.Tensor:
        """(nkv, C, hs) view: the key heads as stored (nkv = nh unless grouped-query attention)."""
        return _kv_rows(self, 0)

    @property
    def _W_V(self) -> torch.Tensor:
        """(nkv, C, hs) view: the value heads as stored."""
        return _kv_rows(self, 1)

    @property
    def W_K(self) -> torch.Tensor:
        """(nh, C, hs): query head h's key weights. A view, or with grouped-query attention a copy that repeats
        key head g for query heads g*nh/nkv ... (g+1)*nh/nkv - 1 (TransformerLens's W_K; `_W_K` is the view)."""
        return _per_query_head(self, _kv_rows(self, 0))

    @property
    def W_V(self) -> torch.Tensor:
        """(nh, C, hs): query head h's value weights; a copy under grouped-query attention (see W_K)."""
        return _per_query_head(self, _kv_rows(self, 1))

    @property
    def W_O(self) -> torch.Tensor:
        """(nh, hs, C) view: head h writes z[h] @ W_O[h] into the residual stream (hook_result)."""
        return self.c_proj.weight.view(self.c_proj.weight.shape[0], self.n_head, -1).permute(1, 2, 0)

    @property
    def b_Q(self) -> torch.Tensor:
        """(nh, hs) view, or zeros (a new tensor) without q/k/v biases."""
        return _qkv_bias(self, 0, self.q_size, self.n_head)

    @property
    def _b_K(self) -> torch.Tensor:
        """(nkv, hs) view, or zeros."""
        return _qkv_bias(self, self.q_size, self.kv_size, self.n_kv_head)

    @property
    def _b_V(self) -> torch.Tensor:
        """(nkv, hs) view, or zeros."""
        return _qkv_bias(self, self.q_size + self.kv_size, self.kv_size, self.n_kv_head)

    @property
    def b_K(self) -> torch.Tensor:
        """(nh, hs): `_b_K` repeated per query head under grouped-query attention (a copy), else the view."""
        return _per_query_head(self, _qkv_bias(self, self.q_size, self.kv_size, self.n_kv_head))

    @property
    def b_V(self) -> torch.Tensor:
        """(nh, hs): `_b_V` repeated per query head under grouped-query attention (a copy), else the view."""
        return _per_query_head(self, _qkv_bias(self, self.q_size + self.kv_size, self.kv_size, self.n_kv_head))

    @property
    def b_O(self) -> torch.Tensor:
        """(C,) the output projection's bias (the parameter itself), or zeros."""
        return _out_bias(self)


class MLPWeights:
    """TransformerLens's MLP weights over the MLP's `c_fc` (gated: [gate; up] rows) and `c_proj`.

    TransformerLens's gated MLP is `(act(x @ W_gate) * (x @ W_in) + b_in) @ W_out + b_out`: W_in is the linear
    "up" half, W_gate the half through the activation. gptviz's gated MLP puts its biases (if any) on gate and up
    before the product, so there `b_in` is the up half's bias and `b_gate` the gate's; a TransformerLens b_in
    (added after the product) has no place in gptviz, and TransformerLens none for these two.
    """

    @property
    def W_in(self) -> torch.Tensor:
        """(C, n_inner) view: the input projection (gated: the linear "up" half)."""
        return _fc_rows(self, up=True).T

    @property
    def W_gate(self) -> torch.Tensor | None:
        """(C, n_inner) view of a gated MLP's gate half; None for an ungated MLP (as TransformerLens)."""
        return _fc_rows(self, up=False).T if self.gated else None

    @property
    def W_out(self) -> torch.Tensor:
        """(n_inner, C) view."""
        return self.c_proj.weight.T

    @property
    def b_in(self) -> torch.Tensor:
        """(n_inner,) view (gated: the up half's bias, which TransformerLens lacks; see the class), or zeros."""
        return _fc_bias(self, up=True)

    @property
    def b_gate(self) -> torch.Tensor | None:
        """(n_inner,) view of a gated MLP's gate bias (gptviz's own), zeros without biases, None when ungated."""
        return _fc_bias(self, up=False) if self.gated else None

    @property
    def b_out(self) -> torch.Tensor:
        """(C,) the output projection's bias (the parameter itself), or zeros."""
        return _out_bias(self)


def _stacked(blocks, part: str, name: str) -> torch.Tensor:
    """One per-layer view of every block, stacked on a new dim 0 (L): a copy, as TransformerLens's stacks."""
    getter = getattr(AttentionWeights if part == "attn" else MLPWeights, name).fget
    return torch.stack([getter(getattr(block, part)) for block in blocks])


class WeightViews:
    """TransformerLens's model-level weights on GPT: `W_E`, `W_pos`, `W_U` (views), `b_U` (zeros) and the
    per-layer weights stacked over L (copies; edit through `model.blocks[l].attn` / `.mlp` instead).

    Reads `config`, `wte`, `wpe` or `pe`, `blocks`, `lm_head` from the model it is mixed into.
    """

    @property
    def W_E(self) -> torch.Tensor:
        """(V, C) the token embedding (the parameter itself)."""
        return self.wte.weight

    @property
    def W_pos(self) -> torch.Tensor:
        """(block_size, C) the position table added to the embeddings: learned (a parameter) or sinusoidal (a
        fixed buffer). Rotary models and models without positions have none: ValueError."""
        kind = self.config.pos_encoding
        if kind == "learned":
            return self.wpe.weight
        if kind == "sinusoidal":
            return self.pe
        raise ValueError(
            f"this model has pos_encoding={kind!r}, so no position table is added to the embeddings"
            + (" (RoPE turns q and k inside attention: see attn.hook_rot_q / hook_rot_k)" if kind == "rotary" else "")
            + "; W_pos exists for pos_encoding 'learned' or 'sinusoidal'"
        )

    @property
    def W_U(self) -> torch.Tensor:
        """(C, V) view of the LM head (with tied embeddings, a view of W_E too: editing one edits both)."""
        return self.lm_head.weight.T

    @property
    def b_U(self) -> torch.Tensor:
        """(V,) zeros, a new tensor: gptviz's LM head has no bias (TransformerLens's b_U reads zero the same)."""
        return _zeros(self.lm_head.weight, self.lm_head.weight.shape[0])

    # ---- stacked over layers (L first), as TransformerLens's HookedTransformer gives them ----------------
    @property
    def W_Q(self) -> torch.Tensor:
        """(L, nh, C, hs), stacked copy."""
        return _stacked(self.blocks, "attn", "W_Q")

    @property
    def W_K(self) -> torch.Tensor:
        """(L, nh, C, hs), stacked copy; grouped-query key heads repeated per query head (see AttentionWeights)."""
        return _stacked(self.blocks, "attn", "W_K")

    @property
    def W_V(self) -> torch.Tensor:
        """(L, nh, C, hs), stacked copy; grouped-query value heads repeated per query head."""
        return _stacked(self.blocks, "attn", "W_V")

    @property
    def W_O(self) -> torch.Tensor:
        """(L, nh, hs, C), stacked copy."""
        return _stacked(self.blocks, "attn", "W_O")

    @property
    def b_Q(self) -> torch.Tensor:
        """(L, nh, hs), stacked copy."""
        return _stacked(self.blocks, "attn", "b_Q")

    @property
    def b_K(self) -> torch.Tensor:
        """(L, nh, hs), stacked copy."""
        return _stacked(self.blocks, "attn", "b_K")

    @property
    def b_V(self) -> torch.Tensor:
        """(L, nh, hs), stacked copy."""
        return _stacked(self.blocks, "attn", "b_V")

    @property
    def b_O(self) -> torch.Tensor:
        """(L, C), stacked copy."""
        return _stacked(self.blocks, "attn", "b_O")

    @property
    def W_in(self) -> torch.Tensor:
        """(L, C, n_inner), stacked copy."""
        return _stacked(self._mlp_blocks("W_in"), "mlp", "W_in")

    @property
    def W_gate(self) -> torch.Tensor | None:
        """(L, C, n_inner), stacked copy; None unless the MLP is gated (as TransformerLens)."""
        if not self.config.mlp_gated:
            return None
        return _stacked(self._mlp_blocks("W_gate"), "mlp", "W_gate")

    @property
    def W_out(self) -> torch.Tensor:
        """(L, n_inner, C), stacked copy."""
        return _stacked(self._mlp_blocks("W_out"), "mlp", "W_out")

    @property
    def b_in(self) -> torch.Tensor:
        """(L, n_inner), stacked copy."""
        return _stacked(self._mlp_blocks("b_in"), "mlp", "b_in")

    @property
    def b_out(self) -> torch.Tensor:
        """(L, C), stacked copy."""
        return _stacked(self._mlp_blocks("b_out"), "mlp", "b_out")

    def _mlp_blocks(self, name: str):
        if not self.config.mlp:
            raise ValueError(f"this model is attention-only (mlp=False): it has no MLP, so no {name}")
        return self.blocks
