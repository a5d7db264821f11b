"""Where the lab's files are: presets, the committed default model, notebooks.

The package is installed editable from a checkout, so lab/ and notebooks/ sit beside it. GPTVIZ_ROOT
overrides that for unusual installs. This module only finds paths; loading is gptviz.checkpoint's job.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = "shakespeare-char"


def package_checkout() -> Path:
    """The folder above the installed package: the checkout, for the editable install the lab uses.

    The one place that knows the package sits inside a checkout; whether lab/ or notebooks/ are really there
    is the caller's question (`repo_root` checks lab/, `gptviz.launcher` looks for notebooks).
    """
    return Path(__file__).resolve().parents[1]


def repo_root() -> Path:
    """The checkout holding lab/ and notebooks/: $GPTVIZ_ROOT if set, else the folder above the package."""
    env = os.environ.get("GPTVIZ_ROOT")
    root = Path(env) if env else package_checkout()
    if not (root / "lab").is_dir():
        raise FileNotFoundError(
            f"cannot find the lab folder at {root / 'lab'}; gptviz looks for lab/ and notebooks/ beside the "
            "package (an editable install from a checkout: `make lab`), or under $GPTVIZ_ROOT if set"
        )
    return root


def presets_dir() -> Path:
    return repo_root() / "lab" / "configs"


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def model_path(name: str = DEFAULT_MODEL) -> Path:
    """Folder of a committed lab model, e.g. model_path() -> <repo>/lab/models/shakespeare-char."""
    path = repo_root() / "lab" / "models" / name
    if not path.is_dir():
        have = sorted(p.name for p in (repo_root() / "lab" / "models").glob("*") if p.is_dir())
        raise FileNotFoundError(
            f"no lab model named {name!r} in {path.parent}; available: {have or 'none'}. "
            "Train one with `gptviz train --config lab/configs/shakespeare-char.json`."
        )
    return path


def preset_path(name: str) -> Path:
    """A preset by name ('shakespeare-char') or by path; errors list the presets there are."""
    candidate = Path(name)
    if candidate.is_file():
        return candidate
    for path in (presets_dir() / name, presets_dir() / f"{name}.json"):
        if path.is_file():
            return path
    have = sorted(p.stem for p in presets_dir().glob("*.json"))
    raise FileNotFoundError(f"no preset {name!r}; presets in {presets_dir()}: {', '.join(have) or 'none'}")


def default_model(name: str = DEFAULT_MODEL, device: str | None = None):
    """(model, tokenizer) of a committed lab model — what every notebook opens on."""
    from .checkpoint import load

    return load(model_path(name), device=device)
