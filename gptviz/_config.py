"""`DictConfig`: to_dict / from_dict for the config dataclasses (GPTConfig, TrainConfig, FinetuneConfig)."""

from __future__ import annotations

from dataclasses import asdict, fields


class DictConfig:
    """Mixin for a dataclass: a plain dict out, and back in with unknown keys named (a typo is an error)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; known fields: {sorted(known)}")
        return cls(**d)
