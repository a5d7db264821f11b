"""The embedding tables, mapped: token and position vectors projected to 2-D / 3-D with PCA.

    emap = embedding_map(model, tok, "tokens")       # emap.points (N, 3), emap.labels, emap.properties
    emap = embedding_map(model, tok, "positions")    # learned (or sinusoidal) position vectors
    emap.nearest_offset                               # positions: how far away each one's nearest neighbour is

What it maps: rows of the token embedding `wte` (V, C) or of the position table (`wpe`, learned, or the
sinusoidal `pe` buffer), each a point. PCA (scikit-learn) keeps the 3 directions of most variance; the record
says how much of the variance they hold (`explained`): a map that keeps 10% hides most of the geometry. So
closeness is also measured in the full C dimensions: every point's nearest neighbour by cosine similarity
(`nearest`), and for positions the offset to it (`nearest_offset`: 1 means "my nearest neighbour is the next
or previous position"). Rotary models add no position vectors (q and k are turned instead; lesson 02 draws
that), so they have no position map. UMAP was left out: it pulls numba and adds little on tables this small.

Properties to colour by: tokens get `class` (letter case, digit, punctuation, space, other), `id`, and, given a
text, `log count` in it; positions get `position` and `nearest offset`. Reading weight tables runs nothing; this
module still sits beside the records (`gptviz.plots.embeddings` draws it, `gptviz.widgets.embeddings` shows it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

KINDS = ("tokens", "positions")
MAX_POINTS = 5000  # a larger vocabulary is mapped by its first MAX_POINTS ids unless `ids` says otherwise


@dataclass
class EmbeddingMap:
    """N embedding vectors projected to their first 3 principal components."""

    kind: str  # "tokens" or "positions"
    labels: list[str]  # N: the token (or "pos 12")
    ids: np.ndarray  # (N,) token ids or positions
    points: np.ndarray  # (N, 3) coordinates on PC1..PC3
    explained: np.ndarray  # (3,) share of the variance each component holds
    nearest: np.ndarray  # (N,) index (into this map) of each point's nearest neighbour in the full C dims
    properties: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) numbers or category strings
    note: str = ""  # what was left out, if anything

    @property
    def nearest_offset(self) -> np.ndarray:
        """(N,) ids[nearest] - ids: for positions, how many steps away the nearest neighbour is."""
        return self.ids[self.nearest] - self.ids


def token_class(token: str) -> str:
    """A display token's character class: what the map colours by default."""
    body = token.replace("␣", "").replace("↵", "").replace("Ġ", "").strip()
    if not body:
        return "space / newline"
    if "(" in body and "/" in body or not body.isprintable():
        return "other (bytes, symbols)"
    if any(ch.isdigit() for ch in body):
        return "digit"
    letters = [ch for ch in body if ch.isalpha()]
    if not letters:
        return "punctuation"
    if not all(ch.isascii() for ch in letters):
        return "other (bytes, symbols)"
    return "upper-case start" if letters[0].isupper() else "lower-case"


def _table(model, kind: str) -> torch.Tensor:
    if kind == "tokens":
        return model.wte.weight
    pos = model.config.pos_encoding
    if pos == "learned":
        return model.wpe.weight
    if pos == "sinusoidal":
        return model.pe
    raise ValueError(
        f"this model's positions are {pos!r}: no position vectors are added to the tokens, so there is nothing "
        "to map. Rotary models turn q and k by a position angle instead (see lesson 02's rotary views); map "
        "kind='tokens' instead"
    )


def _nearest(x: np.ndarray) -> np.ndarray:
    """(N,) index of each row's most cosine-similar other row."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    sim = unit @ unit.T  # (N, N)
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(1)


def embedding_map(
    model, tokenizer=None, kind: str = "tokens", ids=None, text: str | None = None, seed: int = 0
) -> EmbeddingMap:
    """Map the token embeddings (`kind="tokens"`: ids 0..V-1, or `ids`) or the position vectors
    (`kind="positions"`: 0..block_size-1, or `ids`) to 3 principal components. `text`: count each token in it
    (a `log count` property: frequent tokens, rare tokens)."""
    from sklearn.decomposition import PCA

    if kind not in KINDS:
        raise ValueError(f"kind must be 'tokens' or 'positions', got {kind!r}")
    table = _table(model, kind).detach().float().cpu()  # (V or block_size, C)
    note = ""
    if ids is None:
        ids = np.arange(min(len(table), MAX_POINTS))
        if len(table) > MAX_POINTS:
            note = f"the first {MAX_POINTS} of {len(table)} ids (pass ids= for others)"
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if len(ids) < 4 or ids.min() < 0 or ids.max() >= len(table):
        raise ValueError(f"ids must be at least 4 indices in 0..{len(table) - 1}, got {len(ids)} of them")
    x = table[torch.as_tensor(ids)].numpy().astype(np.float64)  # (N, C)
    pca = PCA(n_components=min(3, x.shape[1]), random_state=seed)
    points = pca.fit_transform(x)
    if points.shape[1] < 3:  # a 2-wide toy model: pad the third axis
        points = np.pad(points, ((0, 0), (0, 3 - points.shape[1])))
    explained = np.pad(pca.explained_variance_ratio_, (0, 3 - len(pca.explained_variance_ratio_)))
    nearest = _nearest(x)
    if kind == "tokens":
        if tokenizer is None:
            raise ValueError("a token map needs the tokenizer, to label its points")
        labels = tokenizer.tokens(ids.tolist())
        props: dict[str, np.ndarray] = {
            "class": np.array([token_class(t) for t in labels], dtype=object),
            "id": ids.astype(float),
        }
        if text:
            counts = np.bincount(np.asarray(tokenizer.encode(text), dtype=np.int64), minlength=len(table))
            props["log count"] = np.log10(1 + counts[ids]).astype(float)
    else:
        labels = [f"pos {i}" for i in ids]
        props = {"position": ids.astype(float), "nearest offset": (ids[nearest] - ids).astype(float)}
    return EmbeddingMap(kind, labels, ids, points, explained, nearest, props, note)


def neighbour_summary(emap: EmbeddingMap) -> dict[str, float]:
    """How local a position map is, in the full C dimensions: share of positions whose nearest neighbour is
    the next or previous position, and the median |offset| to it."""
    off = np.abs(emap.nearest_offset)
    return {"adjacent": float((off == 1).mean()), "median_offset": float(np.median(off)), "n": float(len(off))}
