"""The finer decompositions of an ActivationCache (gptviz.cache), as TransformerLens's: every MLP neuron's write
into the residual stream, and the stream entering a layer split into every head, every neuron, the embeddings and
the biases, so that the parts sum to that stream.

    stack, labels = cache.get_full_resid_decomposition(return_labels=True)   # ["L0H0", ..., "L0N0", ..., "bias"]
    (stack.sum(0) - cache["resid_post", -1]).abs().max()                     # ~1e-6

Functions of a cache (they read it and the model's weights, never run the model), and the slice helpers the
cache's methods share. Imports nothing from gptviz.
"""

from __future__ import annotations

import torch

# ---- slices (TransformerLens's Slice forms, as plain indices) -------------------------------------------------


def index(where: object) -> int | slice | torch.Tensor | None:
    """None (all), an int (drops the dim), a slice or (start, stop[, step]) tuple, a list or tensor of indices."""
    if where is None or isinstance(where, (int, slice)):
        return where
    if isinstance(where, tuple):
        return slice(*where)
    if isinstance(where, (list, torch.Tensor)):
        return torch.as_tensor(where, dtype=torch.long)
    raise TypeError(
        f"a position or batch slice must be None, an int, a slice, a (start, stop) tuple or a list of indices; "
        f"got {type(where).__name__}"
    )


def take(x: torch.Tensor, index: int | slice | torch.Tensor | None, dim: int) -> torch.Tensor:
    if index is None:
        return x
    if isinstance(index, torch.Tensor):
        index = index.to(x.device)
    return x[(slice(None),) * (dim % x.ndim) + (index,)]


# ---- neurons and the full decomposition ----------------------------------------------------------------------
def stack_neuron_results(
    cache, layer=-1, pos_slice=None, neuron_slice=None, return_labels=False, incl_remainder=False, apply_ln=False
):
    """(layers * k, B, T, C): post[..., n] * W_out[n] of the chosen neurons of every block before `layer`."""
    cache._need_model()
    model, cfg = cache.model, cache.model.config
    layer = cache._layer(layer, "stack_neuron_results")
    if not cfg.mlp:
        raise ValueError("stack_neuron_results: this model's blocks have no MLP (attention-only), so no neurons")
    pos, chosen = index(pos_slice), index(neuron_slice)
    ids = torch.arange(cfg.mlp_width)
    ids = take(ids, chosen, 0).reshape(-1)  # the neurons kept, as indices
    components, labels = [], []
    for l in range(layer):
        post = take(cache["post", l], pos, -2)[..., ids.to(cache["post", l].device)]  # (B, T, k)
        W_out = model.blocks[l].mlp.c_proj.weight.detach()[:, ids.to(post.device)].to(post.dtype)  # (C, k)
        components.append((post[..., None] * W_out.T).movedim(-2, 0))  # (k, B, T, C)
        labels += [f"L{l}N{int(n)}" for n in ids]
    return finish_stack(cache, components, labels, layer, pos_slice, incl_remainder, apply_ln, return_labels)


def finish_stack(cache, components, labels, layer, pos_slice, incl_remainder, apply_ln, return_labels):
    """Parts (k_i, B, T, C) of the stream entering `layer` -> one stack (empty at layer 0), with "remainder" (that
    stream less the parts) and the norm applied when asked; (stack, labels) with `return_labels`."""
    if components:
        stack = torch.cat(components)
    if incl_remainder or not components:
        into = take(cache._resid_into(layer), index(pos_slice), -2)
        if not components:
            stack = into.new_zeros((0, *into.shape))
    if incl_remainder:
        stack = torch.cat([stack, (into - stack.sum(0))[None]])
        labels.append("remainder")
    if apply_ln:
        stack = cache.apply_ln_to_stack(stack, layer, pos_slice=pos_slice)
    return (stack, labels) if return_labels else stack


def full_resid_decomposition(
    cache, layer=None, mlp_input=False, expand_neurons=True, apply_ln=False, pos_slice=None, return_labels=False
):
    """Heads (stack_head_results), then neurons (or each block's mlp_out), then embed and pos_embed, then "bias":
    the attention output biases (b_O) of the blocks read, and the MLP output biases (b_out) when the neurons are
    expanded (an mlp_out holds its own). The parts sum to the stream entering `layer` (its MLP with mlp_input)."""
    cache._need_model()
    model, cfg = cache.model, cache.model.config
    layer = cache._layer(layer, "get_full_resid_decomposition")
    if mlp_input and layer == cache.n_layer:
        raise ValueError("mlp_input=True needs a block's layer (0..n_layer-1); the unembedding has no MLP")
    heads_until = layer + (1 if mlp_input and not cache._parallel() else 0)
    stack, labels = cache.stack_head_results(heads_until, pos_slice=pos_slice, return_labels=True)
    components, labels = [stack], list(labels)
    if cfg.mlp and layer > 0:
        if expand_neurons:
            part, names = stack_neuron_results(cache, layer, pos_slice, return_labels=True)
        else:
            part, names = cache.decompose_resid(
                layer, mode="mlp", incl_embeds=False, pos_slice=pos_slice, return_labels=True
            )
        components.append(part)
        labels += names
    embeds, names = cache.decompose_resid(0, pos_slice=pos_slice, return_labels=True)  # embed (+ pos_embed)
    components.append(embeds)
    labels += names
    bias = torch.zeros(cfg.n_embd, dtype=embeds.dtype, device=embeds.device)
    for l in range(heads_until):
        b = model.blocks[l].attn.c_proj.bias
        bias = bias + (b.detach().to(bias) if b is not None else 0)
    if expand_neurons and cfg.mlp:
        for l in range(layer):
            b = model.blocks[l].mlp.c_proj.bias
            bias = bias + (b.detach().to(bias) if b is not None else 0)
    components.append(bias.expand(embeds.shape[1:])[None])
    labels.append("bias")
    stack = torch.cat(components)
    if apply_ln:
        stack = cache.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos_slice)
    return (stack, labels) if return_labels else stack
