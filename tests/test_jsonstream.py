"""ObjectStream decodes what json.loads decodes, and refuses what it refuses."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from reactive_tasks._jsonstream import ObjectStream

FIELD = "statuses"


def streamed(text: str) -> Any:
    """The object as ObjectStream reads it (the list member gathered back), or "error"."""
    stream = ObjectStream(text, FIELD)
    try:
        entries = list(stream.entries())
    except ValueError:
        return "error"
    found = dict(stream.rest)
    if stream.streamed:
        found[FIELD] = entries
    return found


def loaded(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return "error"


CASES = [
    "{}", " { } ", '{"statuses":[]}', '{"statuses" : [ ] }',
    '{"statuses":[1,2,{"a":[1]}],"continuationToken":"x"}',
    '{"continuationToken":null, "statuses" : [ {"x":1} , {"y":2} ] } \n',
    '{"statuses":null}', '{"statuses":{"a":1}}', '{"a":[1,2],"statuses":["x"]}',
    '{"x":"\\u00e9\\"}"}', '{"statuses":["]", "}", ","]}', '{"n": -1.5e3}',
    # malformed
    '{"statuses":[1,]}', '{"statuses":[1 2]}', '{"a":1,}', '{"a" 1}', '{"statuses":[1]',
    '{"statuses":[1]} x', '{"a":1}{"b":2}', "", "{", '{"a":}', "{,}",
]


@pytest.mark.parametrize("text", CASES)
def test_as_json_loads(text: str) -> None:
    assert streamed(text) == loaded(text)


def test_a_page_with_every_kind_of_value() -> None:
    page = {
        FIELD: [
            {"taskId": f"t{i}", "status": {"runs": [{"runId": i}], "ok": True, "x": None}}
            for i in range(50)
        ],
        "continuationToken": "abc",
        "weird": [1.5, -2, "\u2603", {"nested": []}],
    }
    compact = json.dumps(page, separators=(",", ":"))
    for text in (json.dumps(page), json.dumps(page, indent=2), compact):
        assert streamed(text) == page


def test_json_that_is_not_an_object_is_refused() -> None:
    for text in ("[]", "null", ' "{" ', "3"):
        assert not ObjectStream.is_object(text)
        assert streamed(text) == "error"
    assert ObjectStream.is_object(' \n {"a": 1}')


def test_nan_and_infinity_as_json_loads_reads_them() -> None:
    found = streamed('{"a": NaN, "statuses": [Infinity, -Infinity]}')
    assert math.isnan(found["a"]) and found[FIELD] == [math.inf, -math.inf]


def test_a_second_list_member_is_refused_rather_than_silently_winning() -> None:
    assert streamed('{"statuses":[1],"statuses":[2]}') == "error"
    assert streamed('{"statuses":3,"statuses":[2]}') == "error"


def test_entries_come_one_at_a_time_before_the_rest_is_read() -> None:
    stream = ObjectStream('{"statuses":[1,2,3], "continuationToken": "t", "bad": ]}', FIELD)
    entries = stream.entries()
    assert [next(entries), next(entries), next(entries)] == [1, 2, 3]
    with pytest.raises(ValueError):
        next(entries)  # met only when reached


def test_random_damage_is_refused_exactly_when_json_loads_refuses_it() -> None:
    rng = random.Random(15)
    page = json.dumps({
        "continuationToken": "c", FIELD: [{"id": i, "v": [i, "s"]} for i in range(5)], "z": {},
    }, indent=rng.choice([None, 1]))
    alphabet = '{}[],:" 1a\\'
    for _ in range(3000):
        text = list(page)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text))
            if rng.random() < 0.5:
                del text[at]
            else:
                text.insert(at, rng.choice(alphabet))
        damaged = "".join(text)
        expected = loaded(damaged)
        if not isinstance(expected, dict):
            expected = "error"  # JSON, but no longer an object: refused too
        if isinstance(expected, dict) and damaged.count(f'"{FIELD}"') > 1:
            continue  # a repeated member: refused on purpose (see above)
        assert streamed(damaged) == expected, damaged
