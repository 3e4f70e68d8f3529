"""The /iexec emulator as a JSON-RPC node: real ABI encoding, batches, errors, scripts."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from Crypto.Hash import keccak
from eth_abi.abi import decode, encode

from reactive_tasks.emulator import EmulatorClient, EmulatorError
from reactive_tasks.emulator.iexec import CHAIN_ID, HUB_ADDRESS, create_deal

TASK = (
    "(uint8,bytes32,uint256,uint256,uint256,uint256,uint256,bytes32,uint256,uint256,"
    "address[],bytes32,bytes,uint256,bytes)"
)
DEAL = (
    "((address,address,uint256),(address,address,uint256),(address,address,uint256),uint256,"
    "uint256,bytes32,address,address,address,string,uint256,uint256,uint256,uint256,uint256,"
    "address)"
)


def selector(signature: str) -> bytes:
    return keccak.new(digest_bits=256, data=signature.encode()).digest()[:4]


def call(
    signature: str, types: list[str], args: list[Any], to: str = HUB_ADDRESS
) -> dict[str, Any]:
    data = "0x" + (selector(signature) + encode(types, args)).hex()
    return {"jsonrpc": "2.0", "id": 7, "method": "eth_call",
            "params": [{"to": to, "data": data}, "latest"]}


def rpc(emulator: EmulatorClient, body: Any) -> Any:
    response = httpx.post(emulator.api_url("iexec") + "/rpc", json=body)
    assert response.status_code == 200
    return response.json()


def result(reply: dict[str, Any], type_str: str) -> Any:
    return decode([type_str], bytes.fromhex(reply["result"][2:]))[0]


def test_node_methods(emulator: EmulatorClient) -> None:
    replies = rpc(emulator, [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "net_version", "params": []},
        {"jsonrpc": "2.0", "id": 3, "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": 4, "method": "eth_getBlockByNumber", "params": ["latest", False]},
        {"jsonrpc": "2.0", "id": 5, "method": "eth_sign", "params": ["0x00", "0x00"]},
        {"jsonrpc": "2.0", "id": 6},
    ])
    by_id = {r["id"]: r for r in replies}
    assert by_id[1]["result"] == hex(CHAIN_ID) and by_id[2]["result"] == str(CHAIN_ID)
    block = by_id[4]["result"]
    assert int(block["number"], 16) == int(by_id[3]["result"], 16)
    assert abs(int(block["timestamp"], 16) - time.time()) < 5
    assert by_id[5]["error"]["code"] == -32601
    assert by_id[None]["error"]["code"] == -32600
    assert rpc(emulator, [])["error"]["code"] == -32600
    bad = httpx.post(emulator.api_url("iexec") + "/rpc", content=b"{nope")
    assert bad.json()["error"]["code"] == -32700


def test_hub_reads_are_abi_encoded(emulator: EmulatorClient) -> None:
    deal, (task,) = create_deal(emulator, [{"status": "REVEALING"}], category=1, start_time=1000)
    task_reply, deal_reply, category_reply, ratio_reply = rpc(emulator, [
        call("viewTask(bytes32)", ["bytes32"], [bytes.fromhex(task[2:])]),
        call("viewDeal(bytes32)", ["bytes32"], [bytes.fromhex(deal[2:])]),
        call("viewCategory(uint256)", ["uint256"], [1]),
        call("final_deadline_ratio()", [], []),
    ])
    status, dealid, idx, timeref, contribution, reveal, final, consensus, *rest = result(
        task_reply, TASK
    )
    assert (status, "0x" + dealid.hex(), idx, timeref) == (2, deal, 0, 1200)
    assert (contribution, final) == (1000 + 7 * 1200, 1000 + 10 * 1200)
    assert reveal > time.time() and consensus != b"\0" * 32 and len(rest[2]) == 1
    deal_fields = result(deal_reply, DEAL)
    assert deal_fields[0][0] != "0x" + "00" * 20  # app pointer: the deal exists
    assert (deal_fields[4], deal_fields[10], deal_fields[11], deal_fields[12]) == (1, 1000, 0, 1)
    assert result(category_reply, "(string,string,uint256)")[::2] == ("S", 1200)
    assert result(ratio_reply, "uint256") == 10


def test_unknown_things_read_like_the_chain(emulator: EmulatorClient) -> None:
    unknown = bytes.fromhex("ab" * 32)
    task_reply, deal_reply, category_reply, other, nothing = rpc(emulator, [
        call("viewTask(bytes32)", ["bytes32"], [unknown]),
        call("viewDeal(bytes32)", ["bytes32"], [unknown]),
        call("viewCategory(uint256)", ["uint256"], [9]),
        call("viewTask(bytes32)", ["bytes32"], [unknown], to="0x" + "12" * 20),
        call("owner()", [], []),
    ])
    assert result(task_reply, TASK)[1] == b"\0" * 32
    assert result(deal_reply, DEAL)[0][0] == "0x" + "00" * 20
    assert category_reply["error"]["code"] == 3
    assert other["result"] == "0x"  # no contract there
    assert "revert" in nothing["error"]["message"]


def test_single_requests_and_task_reads_count_as_polls(emulator: EmulatorClient) -> None:
    _, (task,) = create_deal(emulator, [{"status": "ACTIVE", "polls": 1}, {"status": "FAILED"}])
    read = call("viewTask(bytes32)", ["bytes32"], [bytes.fromhex(task[2:])])
    assert result(rpc(emulator, read), TASK)[0] == 1
    assert result(rpc(emulator, read), TASK)[0] == 4
    assert emulator.task("iexec", task)["step"] == 1
    assert emulator.requests()["by_task"][task] == 2


def test_default_script_and_validation(emulator: EmulatorClient) -> None:
    task = emulator.create_task("iexec")
    assert task.startswith("0x") and len(task) == 66
    assert [s["status"] for s in [emulator.task("iexec", task)["fields"]]] == ["UNSET"]
    for steps, extra in [
        ([{"status": "RUNNING"}], {}),
        ([{"status": "ACTIVE", "progress": 3}], {}),
        ([{"status": "ACTIVE", "results": 5}], {}),
        ([{"status": "ACTIVE"}], {"deal_id": "0x12"}),
        ([{"status": "ACTIVE"}], {"category": 7}),
        ([{"status": "ACTIVE"}], {"start_time": 5, "deadline_in": 3}),
        ([{"status": "ACTIVE"}], {"colour": "red"}),
    ]:
        with pytest.raises(EmulatorError) as info:
            emulator.create_task("iexec", steps, **extra)
        assert info.value.status_code == 422
    with pytest.raises(EmulatorError):
        emulator.create_task("iexec", [{"status": "ACTIVE"}], id="0x1234")


def test_ipfs_gateway_serves_results_only(emulator: EmulatorClient) -> None:
    response = httpx.get(emulator.api_url("iexec") + "/ipfs/QmNothing")
    assert response.status_code == 404
