"""The /iexec emulator's chain: blocks in time, the hub's event logs, eth_getLogs, and
eth_subscribe over its WebSocket."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import httpx
import pytest
from Crypto.Hash import keccak
from eth_abi.abi import decode, encode

from reactive_tasks.backends.iexec._abi import TASK_TYPE
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.emulator._chain import BlockClock, Ledger
from reactive_tasks.emulator._state import StoreWatch, TaskStore, compile_steps
from reactive_tasks.emulator.iexec import HUB_ADDRESS, encode_task
from tests.iexec_helpers import VIEW_TASK_SAMPLES

SIGNATURES = {
    "TaskInitialize": "TaskInitialize(bytes32,address)",
    "TaskContribute": "TaskContribute(bytes32,address,bytes32)",
    "TaskConsensus": "TaskConsensus(bytes32,bytes32)",
    "TaskReveal": "TaskReveal(bytes32,address,bytes32)",
    "TaskReopen": "TaskReopen(bytes32)",
    "TaskFinalize": "TaskFinalize(bytes32,bytes)",
    "TaskClaimed": "TaskClaimed(bytes32)",
}


def topic(name: str) -> str:
    return "0x" + keccak.new(digest_bits=256, data=SIGNATURES[name].encode()).digest().hex()


NAMES = {topic(name): name for name in SIGNATURES}
OTHER = "0x" + "ab" * 32


def rpc(emulator: EmulatorClient, method: str, *params: Any) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    reply = httpx.post(emulator.api_url("iexec") + "/rpc", json=body).json()
    assert "error" not in reply, reply
    return reply["result"]


def set_block_time(emulator: EmulatorClient, seconds: float) -> dict[str, Any]:
    response = httpx.post(emulator.api_url("iexec") + "/_chain", json={"block_time": seconds})
    assert response.status_code == 200
    state: dict[str, Any] = response.json()
    return state


def wait_status(emulator: EmulatorClient, task_id: str, names: list[str]) -> list[dict[str, Any]]:
    """Poll eth_getLogs until the task's logs have these event names (or fail after 5 s)."""
    logs: list[dict[str, Any]] = []
    for _ in range(100):
        logs = rpc(emulator, "eth_getLogs", {
            "address": HUB_ADDRESS, "fromBlock": "0x0", "topics": [None, task_id],
        })
        if [NAMES[log["topics"][0]] for log in logs] == names:
            return logs
        time.sleep(0.05)
    raise AssertionError(f"logs {[NAMES.get(x['topics'][0]) for x in logs]} != {names}")


ALL = ["TaskInitialize", "TaskContribute", "TaskConsensus", "TaskReveal", "TaskFinalize"]


def test_status_changes_emit_the_hubs_logs_in_blocks(emulator: EmulatorClient) -> None:
    set_block_time(emulator, 0.05)
    start = int(rpc(emulator, "eth_blockNumber"), 16)
    task_id = emulator.create_task("iexec", [
        {"status": "ACTIVE", "seconds": 0.2}, {"status": "REVEALING", "seconds": 0.2},
        {"status": "COMPLETED", "results": {"storage": "none"}},
    ])
    logs = wait_status(emulator, task_id, ALL)
    head = int(rpc(emulator, "eth_blockNumber"), 16)
    assert head > start
    blocks = [int(log["blockNumber"], 16) for log in logs]
    assert start <= blocks[0] <= blocks[1] == blocks[2] <= blocks[3] == blocks[4] <= head
    for log in logs:
        assert log["address"] == HUB_ADDRESS and log["removed"] is False
        assert log["topics"][1] == task_id
        block = rpc(emulator, "eth_getBlockByNumber", log["blockNumber"], False)
        assert block["hash"] == log["blockHash"] and block["number"] == log["blockNumber"]
        assert len(log["transactionHash"]) == 66
    init, contribute, consensus, reveal, finalize = logs
    assert len(init["topics"]) == 3 and init["data"] == "0x"
    assert decode(["address"], bytes.fromhex(init["topics"][2][2:]))[0].startswith("0x")
    (value,) = decode(["bytes32"], bytes.fromhex(consensus["data"][2:]))
    assert len(contribute["topics"]) == 3 and len(consensus["topics"]) == 2
    (digest,) = decode(["bytes32"], bytes.fromhex(reveal["data"][2:]))
    assert digest == value  # the emulator's result digest is its consensus value
    (results,) = decode(["bytes"], bytes.fromhex(finalize["data"][2:]))
    assert json.loads(results) == {"storage": "none"}
    # indexes count within a block
    assert int(logs[2]["logIndex"], 16) == int(logs[1]["logIndex"], 16) + 1


def test_get_logs_filters(emulator: EmulatorClient) -> None:
    set_block_time(emulator, 0.05)
    first = emulator.create_task("iexec", [{"status": "ACTIVE"}])
    second = emulator.create_task("iexec", [{"status": "ACTIVE"}])
    (log,) = wait_status(emulator, first, ["TaskInitialize"])
    wait_status(emulator, second, ["TaskInitialize"])
    block = log["blockNumber"]

    def ids(**filt: Any) -> list[str]:
        found = rpc(emulator, "eth_getLogs", {"address": HUB_ADDRESS, "fromBlock": "0x0", **filt})
        return [x["topics"][1] for x in found if x["topics"][1] in (first, second)]

    assert sorted(ids(topics=[None, [first, second, OTHER]])) == sorted([first, second])
    assert ids(topics=[[topic("TaskFinalize")], [first, second]]) == []
    assert ids(topics=[[topic("TaskInitialize"), topic("TaskFinalize")], first]) == [first]
    assert ids(topics=[None, OTHER]) == []
    assert first in ids(fromBlock=block, toBlock=block, topics=[None, first])
    after = hex(int(block, 16) + 1)
    assert first not in ids(fromBlock=after, topics=[None, first])
    found = rpc(emulator, "eth_getLogs", {"address": OTHER[:42], "fromBlock": "0x0"})
    assert found == []
    bad = httpx.post(emulator.api_url("iexec") + "/rpc", json={
        "jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [{"topics": "x"}],
    }).json()
    assert bad["error"]["code"] == -32602


def test_block_time_control(emulator: EmulatorClient) -> None:
    state = set_block_time(emulator, 0.05)
    assert state["block_time"] == 0.05
    time.sleep(0.3)
    later = int(rpc(emulator, "eth_blockNumber"), 16)
    assert later >= state["head"] + 3
    header = rpc(emulator, "eth_getBlockByNumber", "latest", False)
    assert int(header["number"], 16) >= later
    assert abs(int(header["timestamp"], 16) - time.time()) < 2
    refused = httpx.post(emulator.api_url("iexec") + "/_chain", json={"block_time": 0})
    assert refused.status_code == 422


def test_reorg_announces_removed_logs(emulator: EmulatorClient) -> None:
    set_block_time(emulator, 0.05)
    task_id = emulator.create_task("iexec", [{"status": "ACTIVE"}])
    (original,) = wait_status(emulator, task_id, ["TaskInitialize"])
    response = httpx.post(emulator.api_url("iexec") + "/_chain/reorg", json={"task_id": task_id})
    assert response.json() == {"removed": 1}
    time.sleep(0.15)
    logs = rpc(emulator, "eth_getLogs", {
        "address": HUB_ADDRESS, "fromBlock": "0x0", "topics": [None, task_id],
    })
    assert [x["removed"] for x in logs] == [False, True]
    assert {**logs[1], "removed": False} == original


async def _next(ws: aiohttp.ClientWebSocketResponse) -> Any:
    return json.loads(await asyncio.wait_for(ws.receive_str(), 5))


async def _call(ws: aiohttp.ClientWebSocketResponse, method: str, *params: Any) -> Any:
    await ws.send_str(json.dumps({"jsonrpc": "2.0", "id": 9, "method": method,
                                  "params": list(params)}))
    while True:
        message = await _next(ws)
        if message.get("id") == 9:
            return message


async def test_subscribe_pushes_logs_and_heads(emulator: EmulatorClient) -> None:
    set_block_time(emulator, 0.05)
    url = emulator.api_url("iexec").replace("http://", "ws://") + "/rpc"
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        number = await _call(ws, "eth_blockNumber")
        assert number["result"].startswith("0x")
        task_id = emulator.create_task("iexec", [
            {"status": "UNSET", "seconds": 0.3}, {"status": "ACTIVE", "seconds": 0.2},
            {"status": "COMPLETED"},
        ])
        logs_sub = (await _call(ws, "eth_subscribe", "logs", {
            "address": HUB_ADDRESS, "topics": [None, [OTHER, task_id]],
        }))["result"]
        heads_sub = (await _call(ws, "eth_subscribe", "newHeads"))["result"]
        names: list[str] = []
        heads = 0
        while len(names) < len(ALL):
            message = await _next(ws)
            assert message["method"] == "eth_subscription"
            params = message["params"]
            if params["subscription"] == heads_sub:
                heads += 1
                assert params["result"]["hash"].startswith("0x")
                continue
            assert params["subscription"] == logs_sub
            assert params["result"]["topics"][1] == task_id
            names.append(NAMES[params["result"]["topics"][0]])
        assert names == ALL and heads >= 5
        assert (await _call(ws, "eth_unsubscribe", logs_sub))["result"] is True
        assert (await _call(ws, "eth_unsubscribe", logs_sub))["result"] is False
        bad = await _call(ws, "eth_subscribe", "pendingTransactions")
        assert bad["error"]["code"] == -32602


async def test_drop_closes_every_socket(emulator: EmulatorClient) -> None:
    url = emulator.api_url("iexec").replace("http://", "ws://") + "/rpc"
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await _call(ws, "eth_blockNumber")
        async with httpx.AsyncClient() as client:
            response = await client.post(emulator.api_url("iexec") + "/_chain/drop")
        assert response.json()["dropped"] >= 1
        message = await asyncio.wait_for(ws.receive(), 5)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1012 or message.data == 1012


@pytest.fixture(autouse=True)
def _restore_block_time(emulator: EmulatorClient) -> Any:
    yield
    set_block_time(emulator, 1.0)


# -- mining looks only at what may have moved ----------------------------------------------


def test_store_watch_tells_only_the_tasks_that_may_have_moved() -> None:
    store = TaskStore()
    watch = StoreWatch(store)
    polled = store.add("polled", compile_steps([{"status": 1, "polls": 1}, {"status": 2}]))
    timed = store.add("timed", compile_steps([{"status": 1, "seconds": 0.05}, {"status": 2}]))
    store.add("still", compile_steps([{"status": 1}]))
    every, seen = watch.changed()
    assert every and {t.id for t, _ in seen} == {"polled", "timed", "still"}
    assert watch.changed() == (False, [])  # nothing moved, nothing looked at
    polled.read()  # its poll step is used up: it moved
    assert [(t.id, v.fields["status"]) for t, v in watch.changed()[1]] == [("polled", 2)]
    time.sleep(0.06)  # the timed step ran out while nobody read it: its clock tells
    assert [(t.id, v.fields["status"]) for t, v in watch.changed()[1]] == [("timed", 2)]
    assert timed.peek().fields["status"] == 2
    assert watch.changed() == (False, [])
    store.add("new", compile_steps([{"status": 1}]))
    assert [t.id for t, _ in watch.changed()[1]] == ["new"]
    store.clear()
    store.add("after", compile_steps([{"status": 3}]))
    every, seen = watch.changed()  # cleared: every task again, the forgotten ones gone
    assert every and [t.id for t, _ in seen] == ["after"]


def test_ledger_mines_the_changes_it_is_told_and_keeps_the_rest() -> None:
    told: list[tuple[bool, list[tuple[str, int]]]] = []
    a, b = "0x" + "0a" * 32, "0x" + "0b" * 32
    clock = BlockClock(0.01)
    ledger = Ledger(HUB_ADDRESS, lambda: told.pop(0) if told else (False, []),
                    lambda _id, old, new: [("TaskInitialize", [bytes(32), HUB_ADDRESS])],
                    clock)

    def next_block() -> int:
        head = ledger.mined
        while clock.head() <= head:
            time.sleep(0.002)
        return ledger.sync()

    told.append((True, [(a, 1), (b, 1)]))
    first = next_block()
    assert ledger.announced(a) == (1, first) and ledger.announced(b) == (1, first)
    told.append((False, [(a, 2)]))
    second = next_block()
    assert ledger.announced(a) == (2, second)
    assert ledger.announced(b) == (1, first)  # not told: as it was
    assert len(ledger.get_logs({"fromBlock": hex(second)})) == 1
    told.append((True, [(a, 2)]))  # every task: b is gone
    next_block()
    assert ledger.announced(a) == (2, second) and ledger.announced(b) == (0, -1)


def test_view_task_encoding_is_eth_abis() -> None:
    for task in VIEW_TASK_SAMPLES:
        assert encode_task(task) == encode([TASK_TYPE], [task])
