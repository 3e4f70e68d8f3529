"""compact: frozen models share equal fields-sets, planned per class from the annotations."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from reactive_tasks._compact import compact


class Leaf(BaseModel):
    model_config = ConfigDict(frozen=True)

    a: int = 0
    b: str | None = None


class Loose(BaseModel):  # not frozen: its set may still grow, so it keeps its own
    a: int = 0


class Holder(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    leaf: Leaf | None = None
    leaves: tuple[Leaf, ...] = ()
    anything: Any = None
    loose: Loose | None = None


def test_equal_sets_are_shared_at_every_level_the_annotations_allow() -> None:
    one = Holder(name="x", leaf=Leaf(a=1), leaves=(Leaf(a=2), Leaf(a=3)), anything=Leaf(a=4))
    two = Holder(name="y", leaf=Leaf(a=5), leaves=(Leaf(a=6),), anything=Leaf(a=7))
    compact(one)
    compact(two)
    assert one.model_fields_set is two.model_fields_set
    assert one.leaf is not None and two.leaf is not None
    assert one.leaf.model_fields_set is two.leaf.model_fields_set
    assert one.leaves[1].model_fields_set is two.leaves[0].model_fields_set
    assert one.anything.model_fields_set is one.leaf.model_fields_set  # an Any field counts


def test_different_sets_stay_apart_and_right() -> None:
    first, other, again = Leaf(a=1), Leaf(a=1, b="z"), Leaf(a=2)
    for leaf in (first, other, again):
        compact(leaf)
    assert first.model_fields_set == {"a"} and other.model_fields_set == {"a", "b"}
    assert first.model_fields_set is again.model_fields_set
    assert other.model_dump(exclude_unset=True) == {"a": 1, "b": "z"}
    assert first.model_dump(exclude_unset=True) == {"a": 1}


def test_models_that_are_not_frozen_and_other_objects_are_left_alone() -> None:
    one, two = Loose(a=1), Loose(a=2)
    holder = Holder(name="x", loose=one)
    compact(holder)
    compact(two)
    assert one.model_fields_set is not two.model_fields_set
    one.a = 3  # still its own set: assignment may add to it
    compact(object())
    compact({"a": 1})
    compact(None)
