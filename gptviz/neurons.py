"""MLP neurons, recorded: what a neuron does over a text, what it fires on in a corpus, and the few patterns
(NMF factors) a layer's neurons make together.

    acts = neuron_record(model, tok, "ROMEO:\\nBut soft", layer=3)      # acts.values (T, n_inner)
    acts.values[:, 17]                       # neuron 17 of block 3 at every token (colour the text with it)
    top = top_activations(model, tok, corpus_text, layer=3, neuron=17)  # its 20 strongest contexts
    fac = mlp_factors(model, tok, text, layer=3, n_factors=6)           # fac.weights (T, k), fac.components (k, n)

A neuron is one of the `n_inner` numbers an MLP computes per token, read at `blocks.{l}.mlp.hook_post`, after the
nonlinearity (GELU for GPT-2; for a gated MLP, SwiGLU's act(gate) * up) — the values the MLP's output matrix
reads. `hook="pre"` reads before the nonlinearity instead (the gate, for a gated MLP). Activations come from one
`capture` per text: the model is never edited, and every family works.

Factorisation (ecco's "NMF" view): non-negative matrix factorisation of the (T, n_inner) activations into
k factors, `activations ~ weights @ components`; weights (T, k) say how much each factor is on at each token.
NMF needs non-negative input: negative activations (GELU's small dip, a gated MLP's negative products) are
set to 0 first, and `clipped` says what share of the activation mass that dropped. scikit-learn does the NMF.
A record module: drawing is `gptviz.plots.neurons`', the panel `gptviz.widgets.neurons`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .hooks import capture
from .model import evaluating

HOOKS = {"post": "hook_post", "pre": "hook_pre"}


@dataclass
class NeuronRecord:
    """Every neuron of the MLPs in `layers` at every token of one text. CPU float32."""

    tokens: list[str]  # T
    ids: torch.Tensor  # (T,)
    layers: list[int]  # the blocks read, in order
    hook: str  # "post" or "pre"
    values: torch.Tensor  # (T, len(layers) * n_inner): layer layers[0]'s neurons first

    @property
    def n_inner(self) -> int:
        return self.values.shape[1] // len(self.layers)

    def neuron(self, layer: int, neuron: int) -> torch.Tensor:
        """(T,) one neuron's activation at every token."""
        if layer not in self.layers:
            raise KeyError(f"layer {layer} was not recorded; this record has layers {self.layers}")
        if not 0 <= neuron < self.n_inner:
            raise IndexError(f"neuron {neuron} is out of range: the MLP has neurons 0..{self.n_inner - 1}")
        return self.values[:, self.layers.index(layer) * self.n_inner + neuron]

    def strongest(self, layer: int, k: int = 10) -> list[tuple[int, float]]:
        """The k neurons of `layer` with the largest activation anywhere in the text: (neuron, value)."""
        i = self.layers.index(layer) * self.n_inner
        peak = self.values[:, i : i + self.n_inner].max(0).values  # (n_inner,)
        top = peak.topk(min(k, self.n_inner))
        return [(int(n), float(v)) for n, v in zip(top.indices, top.values)]


def _ids(tokenizer, text) -> torch.Tensor:
    ids = torch.as_tensor(tokenizer.encode(text) if isinstance(text, str) else text, dtype=torch.long).flatten()
    if ids.numel() == 0:
        raise ValueError("the text is empty; type at least one character")
    return ids


def _check(model, layers: list[int], hook: str) -> None:
    if hook not in HOOKS:
        raise ValueError(f"hook must be 'post' (after the nonlinearity) or 'pre' (before it), got {hook!r}")
    if not model.config.mlp:
        raise ValueError("this model has no MLP blocks (config.mlp=False), so it has no neurons to show")
    L = model.config.n_layer
    bad = [l for l in layers if not 0 <= l < L]
    if bad:
        raise IndexError(f"layer {bad[0]} does not exist: the model has layers 0..{L - 1}")


@torch.no_grad()
def mlp_activations(model, ids: torch.Tensor, layers: list[int], hook: str = "post") -> torch.Tensor:
    """(B, T, len(layers) * n_inner) activations of `ids` (B, T) at the layers' MLP hook, float32 on the CPU."""
    names = [f"blocks.{l}.mlp.{HOOKS[hook]}" for l in layers]
    with evaluating(model), capture(model, names, to_cpu=True) as cap:
        model(ids.to(model.device))
    return torch.cat([cap[n].float() for n in names], dim=-1)


def neuron_record(model, tokenizer, text, layer: int | list[int] | None = None, hook: str = "post") -> NeuronRecord:
    """Every MLP neuron of `layer` (an int, a list, or None for all layers) at every token of `text` (a string
    or ids). Texts longer than the block size keep their last block_size tokens."""
    layers = list(range(model.config.n_layer)) if layer is None else [layer] if isinstance(layer, int) else list(layer)
    _check(model, layers, hook)
    ids = _ids(tokenizer, text)[-model.config.block_size :]
    values = mlp_activations(model, ids[None], layers, hook)[0]  # (T, layers * n_inner)
    return NeuronRecord(tokenizer.tokens(ids.tolist()), ids, layers, hook, values)


# ---- a neuron over a corpus ---------------------------------------------------------------------------------
@dataclass
class TopExample:
    """One of a neuron's strongest activations: the token, its context, and the neuron along the context."""

    value: float
    position: int  # in the corpus sample's token stream
    tokens: list[str]  # the context window, the firing token at index `focus`
    values: list[float]  # the neuron at each of those tokens
    focus: int


@dataclass
class TopActivations:
    """A neuron's top-k activations over a corpus sample, strongest first."""

    layer: int
    neuron: int
    hook: str
    examples: list[TopExample]
    n_tokens: int  # tokens of the sample that were read
    mean: float  # the neuron's mean and largest activation over them
    max: float
    token_means: list[tuple[str, float, int]]  # (token, mean activation, count): the tokens it fires on most


def top_activations(
    model,
    tokenizer,
    text,
    layer: int,
    neuron: int,
    k: int = 20,
    context: int = 12,
    max_tokens: int = 20_000,
    hook: str = "post",
    batch_size: int = 16,
) -> TopActivations:
    """The k tokens of `text` (a corpus sample, e.g. `load_corpus("shakespeare").val[:20000]`) where neuron
    `neuron` of block `layer` is largest, each with `context` tokens on either side. The text is read in
    windows of block_size tokens (at most `max_tokens` tokens in all), each window on its own, batched."""
    _check(model, [layer], hook)
    if not 0 <= neuron < model.config.mlp_width:
        raise IndexError(f"neuron {neuron} is out of range: the MLP has {model.config.mlp_width} neurons")
    ids = _ids(tokenizer, text)[:max_tokens]
    W = model.config.block_size
    n = (len(ids) + W - 1) // W
    pad = torch.zeros(n * W - len(ids), dtype=torch.long)
    windows = torch.cat([ids, pad]).view(n, W)  # (n, W); the padded tail is cut off below
    col = [neuron]
    acts = []
    for i in range(0, n, batch_size):
        a = mlp_activations(model, windows[i : i + batch_size], [layer], hook)  # (b, W, n_inner)
        acts.append(a[..., col[0]])
    stream = torch.cat(acts).reshape(-1)[: len(ids)]  # (N,) the neuron along the sample
    top = stream.topk(min(k, len(stream)))
    tokens = tokenizer.tokens(ids.tolist())
    examples = []
    for v, p in zip(top.values.tolist(), top.indices.tolist()):
        lo, hi = max(0, p - context), min(len(ids), p + context + 1)
        examples.append(TopExample(v, p, tokens[lo:hi], stream[lo:hi].tolist(), p - lo))
    by_token: dict[str, list[float]] = {}
    for t, v in zip(tokens, stream.tolist()):
        by_token.setdefault(t, []).append(v)
    means = sorted(((t, float(np.mean(v)), len(v)) for t, v in by_token.items() if len(v) >= 3), key=lambda r: -r[1])
    return TopActivations(layer, neuron, hook, examples, len(ids), float(stream.mean()), float(stream.max()), means[:k])


# ---- NMF factors of a layer ---------------------------------------------------------------------------------
@dataclass
class FactorRecord:
    """activations (T, n) ~ weights (T, k) @ components (k, n), all non-negative (ecco's NMF view)."""

    tokens: list[str]  # T
    layers: list[int]
    weights: torch.Tensor  # (T, k) how much each factor is on at each token
    components: torch.Tensor  # (k, len(layers) * n_inner) each factor's neurons
    explained: float  # 1 - |A - WH|^2 / |A|^2 on the clipped activations
    clipped: float  # share of |activation| mass that was negative and set to 0

    def top_neurons(self, factor: int, k: int = 5) -> list[tuple[int, int, float]]:
        """(layer, neuron, weight) of the neurons a factor leans on most."""
        n_inner = self.components.shape[1] // len(self.layers)
        top = self.components[factor].topk(min(k, self.components.shape[1]))
        return [(self.layers[i // n_inner], i % n_inner, float(v)) for v, i in zip(top.values, top.indices.tolist())]


def mlp_factors(
    model,
    tokenizer,
    text,
    layer: int | list[int] | None = None,
    n_factors: int = 6,
    hook: str = "post",
    seed: int = 0,
    record: NeuronRecord | None = None,
) -> FactorRecord:
    """Factor the MLP activations of `layer` (None: all layers, as ecco does) over `text` into `n_factors`
    non-negative patterns (scikit-learn's NMF, NNDSVDa start, seeded). `record`: reuse a `neuron_record`."""
    from sklearn.decomposition import NMF

    rec = record if record is not None else neuron_record(model, tokenizer, text, layer, hook)
    T = len(rec.tokens)
    if not 1 <= n_factors <= T:
        raise ValueError(f"n_factors must be between 1 and the number of tokens ({T}), got {n_factors}")
    A = rec.values.numpy().astype(np.float64)  # (T, n)
    clipped = float(np.clip(-A, 0, None).sum() / max(np.abs(A).sum(), 1e-12))
    A = np.clip(A, 0, None)
    nmf = NMF(n_components=n_factors, init="nndsvda", random_state=seed, max_iter=400)
    weights = nmf.fit_transform(A)  # (T, k)
    order = np.argsort(-weights.sum(0))  # strongest factor first (NMF's own order is arbitrary)
    weights, H = weights[:, order], nmf.components_[order]  # (T, k), (k, n)
    explained = 1 - float(((A - weights @ H) ** 2).sum() / max((A**2).sum(), 1e-12))
    return FactorRecord(
        rec.tokens,
        rec.layers,
        torch.tensor(weights, dtype=torch.float32),
        torch.tensor(H, dtype=torch.float32),
        explained,
        clipped,
    )


@dataclass
class Selective:
    """A neuron whose strongest activations agree on one short pattern."""

    neuron: int
    pattern: str  # the commonest (previous token + firing token) among its top k
    share: float  # the share of its top k that have that pattern
    peak: float  # its largest activation in the sample


def selective_neurons(
    model, tokenizer, text, layer: int, k: int = 20, max_tokens: int = 8192, hook: str = "post", batch_size: int = 16
) -> list[Selective]:
    """Every neuron of block `layer`, most selective first: for each, its k strongest tokens in `text` (read in
    block_size windows, at most `max_tokens` tokens), and how many of them share one two-token pattern (the token
    before and the firing token, e.g. ":↵"). A quick way to find neurons worth a look; it says nothing about
    what a neuron does at weaker activations."""
    from collections import Counter

    _check(model, [layer], hook)
    ids = _ids(tokenizer, text)[:max_tokens]
    W = model.config.block_size
    n = len(ids) // W
    if n == 0:
        raise ValueError(f"the sample has {len(ids)} tokens; give at least one window of block_size={W}")
    windows = ids[: n * W].view(n, W)  # (n, W); a partial last window is left out
    acts = torch.cat(
        [mlp_activations(model, windows[i : i + batch_size], [layer], hook) for i in range(0, n, batch_size)]
    )
    acts = acts.reshape(n * W, -1)  # (N, n_inner)
    tokens = tokenizer.tokens(windows.reshape(-1).tolist())
    top = acts.topk(min(k, len(acts)), dim=0)  # (k, n_inner)
    out = []
    for neuron in range(acts.shape[1]):
        pairs = Counter((tokens[i - 1] if i % W else "") + tokens[i] for i in top.indices[:, neuron].tolist())
        pattern, count = pairs.most_common(1)[0]
        out.append(Selective(neuron, pattern, count / top.indices.shape[0], float(top.values[0, neuron])))
    return sorted(out, key=lambda s: (-s.share, -s.peak))
