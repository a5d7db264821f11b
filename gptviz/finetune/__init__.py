"""Fine-tuning on top of the training loop: continue pre-training on new text, or put a classifier on a GPT.

    from gptviz import finetune as ft
    job = ft.build_job(*ft.load_finetune_preset("finetune-genre"))   # checkpoint + labelled data -> a Trainer
    job.train_steps(100)        # gptviz.train.Trainer runs the steps: there is no second training loop here
    job.evaluate()              # accuracy and confusion matrix on the held-out plays
    job.save("runs/genre")      # one folder: GPT weights, tokenizer, head, labels, LoRA adapters

The package, by job:
- `classifier`: GPTClassifier (a linear head on a GPT trunk), LabelledDataset, evaluation, bag-of-words
  baselines, explain, save/load of a classifier folder;
- `jobs`: FinetuneConfig, what trains (prepare_gpt), the base model, the genre data, ClassifierJob / LMJob
  (a model + data + the Trainer that fits it), build_job and the fine-tuning presets;
- `diff`: the same text through the model before and after, head by head;
- `frozen`: FrozenPrefix, the output of a classifier's frozen lower blocks, computed once per text window.

Every public name is importable from `gptviz.finetune` itself. What the package leaves to others: the loop,
LR schedule and eval batches (`train`), checkpoint files (`checkpoint`), passages and group-aware splits
(`data`), adapters (`lora`), figures (`plots`), the lab panel (`widgets.finetune`), the command
(`commands.finetune`).
"""

from __future__ import annotations

from .classifier import (
    CLASSIFIER_JSON,
    CLASSIFIER_WEIGHTS,
    POOLINGS,
    ClassifierEval,
    GPTClassifier,
    LabelledDataset,
    baselines,
    encode_for,
    encode_lenient,
    evaluate_classifier,
    explain,
    load_classifier,
    save_classifier,
)
from .diff import CheckpointDiff, checkpoint_diff, token_losses
from .frozen import FrozenPrefix
from .jobs import (
    MODES,
    TASKS,
    ClassifierJob,
    FinetuneConfig,
    LMJob,
    build_job,
    corpus_for,
    count_parameters,
    genre_corpus,
    labelled_split,
    load_base,
    load_finetune_preset,
    play_corpus,
    prepare_gpt,
)

__all__ = [
    "CLASSIFIER_JSON",
    "CLASSIFIER_WEIGHTS",
    "POOLINGS",
    "ClassifierEval",
    "GPTClassifier",
    "LabelledDataset",
    "baselines",
    "encode_for",
    "encode_lenient",
    "evaluate_classifier",
    "explain",
    "load_classifier",
    "save_classifier",
    "CheckpointDiff",
    "checkpoint_diff",
    "token_losses",
    "FrozenPrefix",
    "MODES",
    "TASKS",
    "ClassifierJob",
    "FinetuneConfig",
    "LMJob",
    "build_job",
    "corpus_for",
    "count_parameters",
    "genre_corpus",
    "labelled_split",
    "load_base",
    "load_finetune_preset",
    "play_corpus",
    "prepare_gpt",
]
