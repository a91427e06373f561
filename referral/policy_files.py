"""Loading a policies/*.yaml file into its frozen model; any problem stops the app."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class PolicyError(RuntimeError):
    """A policy file is missing or invalid; the app must not start."""


def load_policy(path: Path, model: type[M]) -> M:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"{path}: cannot be read: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(f"{path}: invalid: {exc}") from exc
