"""Kept events and snapshots made smaller: frozen pydantic models share their set of set fields.

pydantic gives every model instance its own ``__pydantic_fields_set__``, a set of field names of
some hundreds of bytes; a watch keeps its latest event, its snapshot and the snapshot's nested
models for as long as it lives. Frozen models never add to that set (``model_copy`` copies it
first), so instances whose sets are equal can share one: thousands of watches keep one set per
shape instead of three or more each.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["compact"]

_MAX_SHAPES = 1024  # distinct field sets kept; past that, models keep their own
_shared: dict[frozenset[str], set[str]] = {}


def compact(model: Any) -> None:
    """Let ``model`` (when a frozen pydantic model), and the frozen models it holds directly or
    in a tuple, share their fields-set with equal ones; anything else is left alone."""
    if not isinstance(model, BaseModel):
        return
    if model.model_config.get("frozen"):
        _share(model)
    for value in model.__dict__.values():
        if isinstance(value, BaseModel):
            if value.model_config.get("frozen"):
                _share(value)
        elif type(value) is tuple:
            for item in value:
                if isinstance(item, BaseModel) and item.model_config.get("frozen"):
                    _share(item)


def _share(model: BaseModel) -> None:
    fields = model.__pydantic_fields_set__
    key = frozenset(fields)
    shared = _shared.get(key)
    if shared is None:
        if len(_shared) >= _MAX_SHAPES:
            return
        shared = _shared.setdefault(key, set(key))
    if shared is not fields:
        object.__setattr__(model, "__pydantic_fields_set__", shared)
