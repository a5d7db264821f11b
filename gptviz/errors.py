"""gptviz's own error types: one base, `GptvizError`, and a few kinds a caller may want to tell apart.

    try:
        model, tok = gptviz.load(path)
    except gptviz.GptvizError as e:   # every error gptviz raises on purpose, with what to do in the message
        print(e)

Each kind also keeps the builtin base it had before this module existed (CheckpointError is a ValueError,
HookNameError a KeyError, TrainingDiverged a RuntimeError, MissingFileError a FileNotFoundError ...), so
`except ValueError` written against an older gptviz still works. Where gptviz calls into a library underneath
(tokenizers, safetensors, transformers, torch's optimizer), the module that calls it wraps that library's
error in one of these with `raise ... from err`, so the cause stays one `__cause__` away for a debugger.

This module imports nothing; every other gptviz module may import it.
"""

from __future__ import annotations


class GptvizError(Exception):
    """Base of every error gptviz raises on purpose; the message says what was wrong and what to do."""


# ---- what the user gave -----------------------------------------------------------------------------------
class ConfigError(GptvizError, ValueError):
    """A config field (GPTConfig, TrainConfig, FinetuneConfig, a preset) of the wrong type or value."""


class InputError(GptvizError, ValueError):
    """An argument gptviz cannot use: text that is not valid Unicode, ids that are not ids, a corpus too short."""


class UsageError(GptvizError, TypeError):
    """A call gptviz cannot make sense of: an unknown keyword, a value where a function belongs, a wrong type."""


class MissingFileError(GptvizError, FileNotFoundError):
    """A file or folder that is not there (a corpus, a preset, a checkpoint)."""


class PathExistsError(GptvizError, FileExistsError):
    """A save would replace something that is not what gptviz writes there (a file, a folder of other files)."""


# ---- files gptviz reads -----------------------------------------------------------------------------------
class CheckpointError(GptvizError, ValueError):
    """A folder that is not a usable gptviz checkpoint (damaged, mismatched, or of another kind)."""


class PretrainedError(GptvizError, OSError):
    """A transformers folder (or hub id) that cannot be read: damaged weights, no model in it, no internet."""


class UnsupportedModelError(GptvizError, ValueError):
    """A checkpoint uses a setting gptviz does not implement; the message names it."""


# ---- what happens while running ---------------------------------------------------------------------------
class NonFiniteError(GptvizError, ValueError):
    """Weights that are NaN or infinite where gptviz would write or keep them (a checkpoint save)."""


class TrainingDiverged(GptvizError, RuntimeError):
    """The loss or the weights became NaN or infinite; the message names the step and a checkpoint to resume."""


class HookNameError(GptvizError, KeyError):
    """An unknown hook name; the message lists the closest valid names."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class HookShapeError(GptvizError, ValueError):
    """A hook function returned something other than a tensor like the activation it replaces."""


class CaptureBudgetError(GptvizError, MemoryError):
    """The requested capture would hold more memory than the budget allows."""


__all__ = [
    "GptvizError",
    "ConfigError",
    "InputError",
    "UsageError",
    "MissingFileError",
    "PathExistsError",
    "CheckpointError",
    "PretrainedError",
    "UnsupportedModelError",
    "NonFiniteError",
    "TrainingDiverged",
    "HookNameError",
    "HookShapeError",
    "CaptureBudgetError",
]
