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


def _read_twice(memo: Any, text: str) -> None:
    """Two reads of ``text``'s entries: a text is kept only once its reading repeats."""
    for _ in range(2):
        stream = ObjectStream(text, FIELD)
        for entry in stream.entries():
            memo.remember(entry["id"], text, stream.start, stream.end, ("key", entry["v"]))


def test_a_memo_answers_an_entry_whose_text_is_the_remembered_one() -> None:
    from reactive_tasks._jsonstream import Known, TextMemo

    memo = TextMemo()
    first = '{"statuses":[{"id":"a","v":1},{"id":"b","v":2}]}'
    stream = ObjectStream(first, FIELD)
    for entry in stream.entries():
        memo.remember(entry["id"], first, stream.start, stream.end, ("key", entry["v"]))
    assert len(memo) == 0 and not memo.holds_texts()  # seen once: the readings alone
    _read_twice(memo, first)
    assert len(memo) == 2

    again = '{"statuses":[ {"id":"a","v":1} , {"id":"b","v":3}, {"id":"a","v":1}]}'
    peek = {again.index('{"id":"a"'): "a", again.index('{"id":"b"'): "b"}
    peek[again.rindex('{"id":"a"')] = "a"
    found = list(ObjectStream(again, FIELD, lambda text, pos: (
        memo.match(peek[pos], text, pos) if pos in peek else None
    )).entries())
    assert found[0] == Known("a", '{"id":"a","v":1}', ("key", 1))  # the same text: not decoded
    assert found[1] == {"id": "b", "v": 3}  # its text moved: decoded
    assert found[2] == Known("a", '{"id":"a","v":1}', ("key", 1))


def test_a_memo_keeps_a_text_only_while_its_reading_and_text_hold_still() -> None:
    from reactive_tasks._jsonstream import TextMemo

    memo = TextMemo()
    memo.remember("a", '"x"', 0, 3, 1)
    assert memo.match("a", '"x"', 0) is None  # first sighting: no text kept
    memo.remember("a", '"x"', 0, 3, 2)
    assert memo.match("a", '"x"', 0) is None  # the reading changed: still none
    memo.remember("a", '"x"', 0, 3, 2)
    assert memo.match("a", '"x"', 0) is not None  # the same reading twice: kept
    # Its text moved although the reading did not (say a reclaim's takenUntil): dropped, and
    # kept again only at the read after, so a text moving at every read is copied every other.
    assert memo.match("a", '"y"', 0) is None
    memo.remember("a", '"y"', 0, 3, 2)
    assert not memo.holds_texts()
    memo.remember("a", '"y"', 0, 3, 2)
    assert memo.match("a", '"y"', 0) is not None


def test_a_memo_keeps_no_number_and_forgets_keys_unseen_for_two_periods() -> None:
    from reactive_tasks._jsonstream import TextMemo

    memo = TextMemo(max_age=0.0)
    for _ in range(2):
        memo.remember("n", "12", 0, 2, 12)  # "12" is a prefix of "123": never kept
    assert memo.match("n", "123", 0) is None and len(memo) == 0
    for _ in range(2):
        memo.remember("a", '"x"', 0, 3, 1)
        memo.remember("b", '"y"', 0, 3, 2)
    memo.rotate()
    assert memo.match("a", '"x"', 0) is not None  # found in the older generation: kept on
    memo.rotate()
    assert memo.match("a", '"x"', 0) is not None
    assert memo.match("b", '"y"', 0) is None  # unseen for two periods: forgotten
    assert memo.match("a", '["x", 1]', 1) is not None and memo.match("a", '"z"', 0) is None


def test_a_memo_whose_texts_keep_moving_keeps_none_for_longer_and_longer() -> None:
    from reactive_tasks._jsonstream import TextMemo

    memo = TextMemo()
    keys = range(40)

    def page(version: int) -> int:
        """One page of every key, its text at ``version`` (its reading never moves): the
        number of texts kept after it."""
        memo.rotate()
        for k in keys:
            text = f'"{k}-{version}"'
            if memo.match(k, text, 0) is None:
                memo.remember(k, text, 0, len(text), k)
        return len(memo)

    assert [page(0), page(1), page(1)] == [0, 40, 40]  # kept once the reading repeated: hits
    assert page(2) == 0  # every text moved, not the readings: dropped
    assert [page(3), page(4)] == [0, 40]  # one quiet page, then kept again
    assert [page(5), page(6), page(7), page(8)] == [0, 0, 0, 40]  # moved again: two quiet
    assert [page(8), page(8)] == [40, 40]  # at rest again: the spells start over from one
    assert [page(9), page(10), page(11)] == [0, 0, 40]
