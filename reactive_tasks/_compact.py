"""Kept events and snapshots made smaller: frozen pydantic models share their set of set fields.

pydantic gives every model instance its own ``__pydantic_fields_set__``, a set of field names of
some hundreds of bytes; a watch keeps its latest event, its snapshot and the snapshot's nested
models for as long as it lives. Frozen models never add to that set (``model_copy`` copies it
first), so instances whose sets are equal can share one: thousands of watches keep one set per
shape instead of three or more each.

It runs for every event, so what it looks at is planned once per class: whether the class is a
frozen model, and which of its fields may hold a model (by their annotations).
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel

__all__ = ["compact"]

_MAX_SHAPES = 1024  # distinct field sets kept; past that, models keep their own
_MAX_PLANS = 4096  # classes planned; past that, classes are planned at each call
_shared: dict[frozenset[str], set[str]] = {}
#: per model class, the shared set its latest instance got (most instances of a class have it)
_latest: dict[type, set[str]] = {}
#: per class: (a frozen pydantic model?, the names of its fields that may hold a model)
_plans: dict[type, tuple[bool, tuple[str, ...]]] = {}


def compact(model: Any) -> None:
    """Let ``model`` (when a frozen pydantic model), and the frozen models it holds directly or
    in a tuple, share their fields-set with equal ones; anything else is left alone."""
    cls = type(model)
    plan = _plans.get(cls) or _plan(cls)
    frozen, holders = plan
    if frozen:
        _share(model)
    if not holders:
        return
    values = model.__dict__
    for name in holders:
        value = values.get(name)
        if type(value) is tuple:
            for item in value:
                if isinstance(item, BaseModel) and item.model_config.get("frozen"):
                    _share(item)
        elif isinstance(value, BaseModel) and value.model_config.get("frozen"):
            _share(value)


def _plan(cls: type) -> tuple[bool, tuple[str, ...]]:
    if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
        plan: tuple[bool, tuple[str, ...]] = (False, ())
    else:
        holders = tuple(
            name for name, info in cls.model_fields.items() if _may_hold_model(info.annotation)
        )
        plan = (bool(cls.model_config.get("frozen")), holders)
    if len(_plans) < _MAX_PLANS:
        _plans[cls] = plan
    return plan


def _may_hold_model(annotation: Any) -> bool:
    """False only where the annotation rules a model out (``str``, ``int | None``, ...)."""
    if annotation is Any:
        return True
    if annotation is None or annotation is type(None):
        return False
    if isinstance(annotation, type) and not isinstance(annotation, types.GenericAlias):
        return issubclass(annotation, BaseModel)  # a plain class: a model, or never one
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return False
    if origin is typing.Annotated:
        return _may_hold_model(typing.get_args(annotation)[0])
    if origin is not None:  # a union, a tuple[...], a list[...]: any of its arguments
        args = typing.get_args(annotation)
        return not args or any(_may_hold_model(arg) for arg in args if arg is not Ellipsis)
    return True  # Any, a type variable, a forward reference: it may


def _share(model: BaseModel) -> None:
    fields = model.__pydantic_fields_set__
    latest = _latest.get(type(model))
    if latest is not None and (latest is fields or latest == fields):
        if latest is not fields:
            object.__setattr__(model, "__pydantic_fields_set__", latest)
        return
    key = frozenset(fields)
    shared = _shared.get(key)
    if shared is None:
        if len(_shared) >= _MAX_SHAPES:
            return
        shared = _shared.setdefault(key, set(key))
    if len(_latest) < _MAX_PLANS:
        _latest[type(model)] = shared
    if shared is not fields:
        object.__setattr__(model, "__pydantic_fields_set__", shared)
