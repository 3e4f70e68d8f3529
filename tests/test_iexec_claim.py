"""IExecBackend.claim: the SDK's checks, a signed transaction sent once, its receipt, no key leak.

Every claim goes to the emulator's node: it decodes the raw transaction, recovers its sender,
checks chain id and nonce, runs the hub's claim(bytes32) with PoCo's rules and mines it in the
next block (``/iexec/_wallet`` lists what it received).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from eth_abi.abi import encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak

from reactive_tasks import (
    BackendUnavailable,
    ConfigurationError,
    PollPolicy,
    TaskNotFound,
    aiter,
)
from reactive_tasks.backends import (
    IExecBackend,
    TaskNotClaimable,
    TransactionFailed,
    TransactionReverted,
)
from reactive_tasks.backends.iexec._abi import TASK_TYPE
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.emulator.iexec import HUB_ADDRESS, create_deal
from tests.hostile import HostileServer, Reply

FAST = PollPolicy(interval=0.05, max_interval=0.2, jitter=0.0, request_timeout=5.0)
TIMED_OUT = ([{"status": "ACTIVE"}], {"deadline_in": -60})
TASK_CLAIMED = "0xcbc308b5f91040d2659a5201858344b0b583cd2f9e18e8470c2fa052c5b21ff8"


@pytest.fixture
def account() -> LocalAccount:
    """A fresh key: its nonce starts at 0 on the emulated chain."""
    return Account.create()


@pytest.fixture
def rpc_url(emulator: EmulatorClient) -> Iterator[str]:
    """The node's URL; the chain is set back to EIP-1559 fees afterwards."""
    yield emulator.api_url("iexec") + "/rpc"
    httpx.post(emulator.api_url("iexec") + "/_wallet", json={"london": True})


def _wallet(emulator: EmulatorClient, **settings: Any) -> dict[str, Any]:
    url = emulator.api_url("iexec") + "/_wallet"
    response = httpx.post(url, json=settings) if settings else httpx.get(url)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def _sent(emulator: EmulatorClient, account: LocalAccount) -> list[dict[str, Any]]:
    """The transactions the node received from ``account``."""
    sender = account.address.lower()
    return [t for t in _wallet(emulator)["transactions"] if t["from"] == sender]


def _task(emulator: EmulatorClient, steps: list[dict[str, Any]], **extra: Any) -> str:
    _, (task,) = create_deal(emulator, steps, **extra)
    return task


def _sends_guard(emulator: EmulatorClient) -> int:
    """A fault that only an eth_sendRawTransaction request would consume; its id."""
    fault = emulator.inject_fault("iexec", "status", status=503,
                                  path_contains="eth_sendRawTransaction", count=5)
    fault_id: int = fault["id"]
    return fault_id


def _remaining(emulator: EmulatorClient, fault_id: int) -> int:
    return next((f["remaining"] for f in emulator.faults() if f["id"] == fault_id), 0)


async def test_claim_returns_the_hash_and_the_task_ends_failed(
    emulator: EmulatorClient, rpc_url: str, account: LocalAccount
) -> None:
    steps, extra = TIMED_OUT
    task = _task(emulator, steps, **extra)
    backend = IExecBackend(rpc_url, HUB_ADDRESS, policy=FAST, signer=account)
    try:
        tx_hash = await backend.claim(task)
        events = [(e.kind.value, e.native_status) async for e in aiter(backend.observe(task))]
        logs = httpx.post(rpc_url, json={
            "jsonrpc": "2.0", "id": 1, "method": "eth_getLogs",
            "params": [{"address": HUB_ADDRESS, "fromBlock": "earliest",
                        "topics": [TASK_CLAIMED, task]}],
        }).json()["result"]
    finally:
        await backend.aclose()
    (sent,) = _sent(emulator, account)
    assert sent["hash"] == tx_hash and sent["status"] == 1
    assert sent["from"] == account.address.lower() and sent["nonce"] == 0
    assert events == [("TASK_FAILED", "FAILED")]  # obsTask's end after a claim
    assert [entry["transactionHash"] for entry in logs] == [tx_hash]


@pytest.mark.parametrize(
    ("steps", "extra", "says"),
    [
        ([{"status": "COMPLETED"}], {"deadline_in": -60}, "status COMPLETED"),
        ([{"status": "FAILED"}], {"deadline_in": -60}, "status FAILED"),
        ([{"status": "ACTIVE"}], {"deadline_in": 3600}, "before its final deadline"),
    ],
    ids=["completed", "already-claimed", "before-deadline"],
)
async def test_a_task_that_cannot_be_claimed_sends_nothing(
    emulator: EmulatorClient, rpc_url: str, account: LocalAccount,
    steps: list[dict[str, Any]], extra: dict[str, Any], says: str,
) -> None:
    task = _task(emulator, steps, **extra)
    guard = _sends_guard(emulator)
    backend = IExecBackend(rpc_url, HUB_ADDRESS, policy=FAST, signer=account)
    try:
        with pytest.raises(TaskNotClaimable, match=says) as caught:
            await backend.claim(task)
    finally:
        await backend.aclose()
    assert caught.value.task_id == task
    assert _remaining(emulator, guard) == 5  # no eth_sendRawTransaction reached the node
    assert _sent(emulator, account) == []


async def test_a_task_not_initialized_on_chain_is_not_found(
    emulator: EmulatorClient, rpc_url: str, account: LocalAccount
) -> None:
    task = _task(emulator, [{"status": "UNSET"}], deadline_in=-60)
    backend = IExecBackend(rpc_url, HUB_ADDRESS, policy=FAST, signer=account)
    try:
        with pytest.raises(TaskNotFound, match="not initialized"):
            await backend.claim(task)
    finally:
        await backend.aclose()
    assert _sent(emulator, account) == []


async def test_a_reverted_receipt_raises_transaction_reverted(
    emulator: EmulatorClient, rpc_url: str, account: LocalAccount
) -> None:
    steps, extra = TIMED_OUT
    task = _task(emulator, steps, **extra)
    emulator.inject_fault("iexec", "api_error", path_contains="eth_sendRawTransaction",
                          body={"revert": True})
    backend = IExecBackend(rpc_url, HUB_ADDRESS, policy=FAST, signer=account)
    try:
        with pytest.raises(TransactionReverted, match="reverted") as caught:
            await backend.claim(task)
        status = await backend.status(task)
    finally:
        await backend.aclose()
    (sent,) = _sent(emulator, account)
    assert sent["status"] == 0 and caught.value.tx_hash == sent["hash"]
    assert status.native_status == "TIMEOUT"  # not claimed: the transaction reverted


async def test_a_refused_send_is_a_transaction_failure(
    emulator: EmulatorClient, rpc_url: str, account: LocalAccount
) -> None:
    steps, extra = TIMED_OUT
    task = _task(emulator, steps, **extra)
    emulator.inject_fault("iexec", "api_error", path_contains="eth_sendRawTransaction",
                          code=-32000, message="insufficient funds for gas * price + value")
    backend = IExecBackend(rpc_url, HUB_ADDRESS, policy=FAST, signer=account)
    try:
        with pytest.raises(TransactionFailed, match="insufficient funds") as caught:
            await backend.claim(task)
    finally:
        await backend.aclose()
    assert type(caught.value) is TransactionFailed and caught.value.tx_hash.startswith("0x")


async def test_fees_are_eip1559_where_blocks_have_a_base_fee(
    emulator: EmulatorClient, rpc_url: str, account: LocalAccount
) -> None:
    settings = _wallet(emulator, london=True, base_fee=3_000_000, priority_fee=1_000)
    steps, extra = TIMED_OUT
    task = _task(emulator, steps, **extra)
    backend = IExecBackend(rpc_url, HUB_ADDRESS, policy=FAST, signer=account.key.hex())
    try:
        await backend.claim(task)
    finally:
        await backend.aclose()
    (sent,) = _sent(emulator, account)
    assert settings["london"] and sent["type"] == 2 and sent["gas_price"] is None
    assert sent["max_priority_fee_per_gas"] == 1_000
    assert sent["max_fee_per_gas"] == 2 * 3_000_000 + 1_000
    assert sent["gas"] > 52_000  # the node's estimate plus a margin


async def test_fees_are_a_legacy_gas_price_on_a_chain_without_base_fee(
    emulator: EmulatorClient, rpc_url: str, account: LocalAccount
) -> None:
    settings = _wallet(emulator, london=False, gas_price=7_000_000_000)
    steps, extra = TIMED_OUT
    task = _task(emulator, steps, **extra)
    backend = IExecBackend(rpc_url, HUB_ADDRESS, policy=FAST, signer=account)
    try:
        tx_hash = await backend.claim(task)
    finally:
        await backend.aclose()
    (sent,) = _sent(emulator, account)
    assert not settings["london"] and sent["hash"] == tx_hash
    assert sent["type"] == 0 and sent["gas_price"] == 7_000_000_000
    assert sent["max_fee_per_gas"] is None


async def test_a_transient_fault_on_the_send_is_not_retried(
    emulator: EmulatorClient, rpc_url: str, account: LocalAccount
) -> None:
    steps, extra = TIMED_OUT
    task = _task(emulator, steps, **extra)
    guard = _sends_guard(emulator)
    backend = IExecBackend(rpc_url, HUB_ADDRESS, policy=FAST, signer=account)
    try:
        with pytest.raises(BackendUnavailable) as caught:
            await backend.claim(task)
    finally:
        await backend.aclose()
    text = str(caught.value)
    assert "not retried" in text and "look it up before claiming again" in text
    assert _remaining(emulator, guard) == 4  # exactly one eth_sendRawTransaction
    assert _sent(emulator, account) == []


async def test_transient_faults_of_the_reads_before_the_send_are_retried(
    emulator: EmulatorClient, rpc_url: str, account: LocalAccount
) -> None:
    steps, extra = TIMED_OUT
    task = _task(emulator, steps, **extra)
    emulator.inject_fault("iexec", "status", status=503, path_contains="eth_estimateGas",
                          count=2)
    backend = IExecBackend(rpc_url, HUB_ADDRESS, policy=FAST, signer=account)
    try:
        tx_hash = await backend.claim(task)
    finally:
        await backend.aclose()
    assert [t["hash"] for t in _sent(emulator, account)] == [tx_hash]
    assert emulator.faults() == []


async def test_claim_without_a_signer_names_what_is_missing(
    emulator: EmulatorClient, rpc_url: str
) -> None:
    steps, extra = TIMED_OUT
    task = _task(emulator, steps, **extra)
    emulator.reset_requests()
    backend = IExecBackend(rpc_url, HUB_ADDRESS, policy=FAST)
    try:
        with pytest.raises(ConfigurationError, match="claim needs a signer"):
            await backend.claim(task)
    finally:
        await backend.aclose()
    assert emulator.requests()["by_api"].get("iexec", 0) == 0


@pytest.mark.parametrize("bad", ["0x" + "zz" * 32, "0x" + "00" * 32, "12" * 20, 42])
def test_a_bad_signer_is_refused_without_showing_it(bad: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        IExecBackend("http://127.0.0.1:1/rpc", HUB_ADDRESS, signer=bad)
    assert isinstance(bad, int) or bad not in str(caught.value)
    assert caught.value.__cause__ is None  # no chained error carrying the value either


async def test_the_key_never_shows_in_logs_reprs_or_errors(
    emulator: EmulatorClient, rpc_url: str, account: LocalAccount,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = account.key.hex()
    forms = {key, key.removeprefix("0x"), key.removeprefix("0x").upper()}
    steps, extra = TIMED_OUT
    claimable = _task(emulator, steps, **extra)
    faulty = _task(emulator, steps, **extra)
    done = _task(emulator, [{"status": "COMPLETED"}], deadline_in=-60)
    texts: list[str] = []
    caplog.set_level(logging.DEBUG)
    for signer in (key, key.removeprefix("0x").upper(), account):
        backend = IExecBackend(rpc_url, HUB_ADDRESS, policy=FAST, signer=signer)
        texts += [repr(backend), repr(backend.signer), str(vars(backend))]
        await backend.aclose()
    backend = IExecBackend(rpc_url, HUB_ADDRESS, policy=FAST, signer=key)
    try:
        texts.append(await backend.claim(claimable))
        for task in (done, faulty):
            if task == faulty:
                _sends_guard(emulator)
            with pytest.raises(Exception) as caught:
                await backend.claim(task)
            texts += [str(caught.value), repr(caught.value)]
    finally:
        await backend.aclose()
    assert backend.signer is not None and account.address.lower() in repr(backend.signer)
    with pytest.raises(TypeError):
        pickle.dumps(backend.signer)
    everything = "\n".join([*texts, caplog.text])
    assert caplog.records  # DEBUG logging did record the exchanges
    for form in forms:
        assert form not in everything


# -- the emulated node's side ------------------------------------------------------------------


def _rpc(rpc_url: str, method: str, *params: Any) -> dict[str, Any]:
    reply: dict[str, Any] = httpx.post(
        rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    ).json()
    return reply


def _claim_tx(task: str, **fields: Any) -> dict[str, Any]:
    data = "0x" + (keccak(b"claim(bytes32)")[:4] + bytes.fromhex(task[2:])).hex()
    return {"type": 2, "chainId": 31337, "nonce": 0, "to": bytes.fromhex(HUB_ADDRESS[2:]),
            "data": data, "value": 0, "gas": 80_000, "maxFeePerGas": 10**9,
            "maxPriorityFeePerGas": 10**6, **fields}


def _raw(account: LocalAccount, tx: dict[str, Any]) -> str:
    return "0x" + bytes(account.sign_transaction(tx).raw_transaction).hex()


def test_the_node_recovers_the_sender_and_checks_chain_id_and_nonce(
    emulator: EmulatorClient, rpc_url: str, account: LocalAccount
) -> None:
    steps, extra = TIMED_OUT
    task = _task(emulator, steps, **extra)
    wrong_chain = _rpc(rpc_url, "eth_sendRawTransaction", _raw(account, _claim_tx(task, chainId=1)))
    too_high = _rpc(rpc_url, "eth_sendRawTransaction", _raw(account, _claim_tx(task, nonce=5)))
    garbage = _rpc(rpc_url, "eth_sendRawTransaction", "0x02c0")
    good = _raw(account, _claim_tx(task))
    accepted = _rpc(rpc_url, "eth_sendRawTransaction", good)
    again = _rpc(rpc_url, "eth_sendRawTransaction", good)
    too_low = _rpc(rpc_url, "eth_sendRawTransaction", _raw(account, _claim_tx(task, gas=90_000)))
    assert "invalid chain id" in wrong_chain["error"]["message"]
    assert "nonce too high" in too_high["error"]["message"]
    assert garbage["error"]["code"] == -32602
    assert accepted["result"] == "0x" + bytes(account.sign_transaction(_claim_tx(task)).hash).hex()
    assert "already known" in again["error"]["message"]
    assert "nonce too low" in too_low["error"]["message"]
    (sent,) = _sent(emulator, account)  # recovered from the signature
    assert sent["hash"] == accepted["result"] and sent["nonce"] == 0
    assert _rpc(rpc_url, "eth_getTransactionCount", account.address, "pending")["result"] == "0x1"
    by_hash = _rpc(rpc_url, "eth_getTransactionByHash", accepted["result"])["result"]
    assert by_hash["from"] == account.address.lower() and by_hash["type"] == "0x2"


def test_the_hub_refuses_a_claim_it_cannot_accept_with_its_custom_errors(
    emulator: EmulatorClient, rpc_url: str, account: LocalAccount
) -> None:
    done = _task(emulator, [{"status": "COMPLETED"}], deadline_in=-60)
    early = _task(emulator, [{"status": "ACTIVE"}], deadline_in=3600)
    replies = {
        name: _rpc(rpc_url, method, {"from": account.address, "to": HUB_ADDRESS,
                                     "data": _claim_tx(task)["data"]}, *tag)
        for name, method, task, tag in [
            ("completed", "eth_estimateGas", done, ()),
            ("early", "eth_estimateGas", early, ()),
            ("preflight", "eth_call", done, ("latest",)),
        ]
    }
    not_claimable = "0x" + keccak(b"TaskNotClaimable(bytes32,uint8)")[:4].hex()
    not_reached = "0x" + keccak(b"DeadlineNotReached(uint256,uint256)")[:4].hex()
    for name, prefix in [("completed", not_claimable), ("early", not_reached),
                         ("preflight", not_claimable)]:
        error = replies[name]["error"]
        assert error["code"] == 3 and error["message"] == "execution reverted", name
        assert error["data"].startswith(prefix), name
    assert replies["completed"]["error"]["data"].endswith("03".rjust(64, "0"))  # the status


def test_a_legacy_chain_has_no_base_fee_and_refuses_typed_transactions(
    emulator: EmulatorClient, rpc_url: str, account: LocalAccount
) -> None:
    steps, extra = TIMED_OUT
    task = _task(emulator, steps, **extra)
    london = _rpc(rpc_url, "eth_getBlockByNumber", "latest", False)["result"]
    _wallet(emulator, london=False, gas_price=5)
    legacy = _rpc(rpc_url, "eth_getBlockByNumber", "latest", False)["result"]
    typed = _rpc(rpc_url, "eth_sendRawTransaction", _raw(account, _claim_tx(task)))
    assert "baseFeePerGas" in london and "baseFeePerGas" not in legacy
    assert _rpc(rpc_url, "eth_gasPrice")["result"] == "0x5"
    assert _rpc(rpc_url, "eth_maxPriorityFeePerGas")["error"]["code"] == -32601
    assert "not supported" in typed["error"]["message"]


async def test_a_claim_the_gas_estimate_reverts_is_not_claimable_and_not_sent(
    emulator: EmulatorClient, rpc_url: str, account: LocalAccount
) -> None:
    steps, extra = TIMED_OUT
    task = _task(emulator, steps, **extra)
    emulator.inject_fault("iexec", "api_error", path_contains="eth_estimateGas", code=3)
    guard = _sends_guard(emulator)
    backend = IExecBackend(rpc_url, HUB_ADDRESS, policy=FAST, signer=account)
    try:
        with pytest.raises(TaskNotClaimable, match="eth_estimateGas reverted"):
            await backend.claim(task)
    finally:
        await backend.aclose()
    assert _remaining(emulator, guard) == 5 and _sent(emulator, account) == []


async def test_no_receipt_within_the_bound_names_the_transaction(
    emulator: EmulatorClient, rpc_url: str, account: LocalAccount
) -> None:
    steps, extra = TIMED_OUT
    task = _task(emulator, steps, **extra)
    chain = emulator.api_url("iexec") + "/_chain"
    before = httpx.get(chain).json()["block_time"]
    httpx.post(chain, json={"block_time": 600}).raise_for_status()  # the next block is far off
    backend = IExecBackend(rpc_url, HUB_ADDRESS, policy=FAST, signer=account)
    try:
        with pytest.raises(BackendUnavailable, match="no receipt") as caught:
            await backend.claim(task, timeout=1.0)
    finally:
        await backend.aclose()
        httpx.post(chain, json={"block_time": before}).raise_for_status()
    (sent,) = _sent(emulator, account)  # sent once, then only its receipt was asked for
    assert sent["hash"] in str(caught.value)


# -- a node that answers what no honest hub would ----------------------------------------------


def _scripted_node(receipts: list[Any]) -> Any:
    """A JSON-RPC handler for HostileServer: a claimable task, fees, then ``receipts`` in turn
    (a dict is a receipt, an int an HTTP status)."""
    task = (1, b"\x11" * 32, 0, 300, 0, 0, 1_000, b"\x00" * 32, 0, 0, [], b"\x00" * 32, b"", 0,
            b"")
    answers = {
        "eth_call": "0x" + encode([TASK_TYPE], [task]).hex(), "eth_chainId": "0x7a69",
        "eth_getTransactionCount": "0x0", "eth_estimateGas": "0xcb20",
        "eth_getBlockByNumber": {"number": "0x1", "baseFeePerGas": "0x1"},
        "eth_maxPriorityFeePerGas": "0x1", "eth_gasPrice": "0x2", "eth_sendRawTransaction": "0x",
    }

    def handler(request: Any) -> Reply:
        body = request.json()
        if isinstance(body, dict) and body["method"] == "eth_sendRawTransaction":
            return Reply.json({"jsonrpc": "2.0", "id": body["id"], "result": "0x" + "ab" * 32})
        if body[0]["method"] == "eth_getTransactionReceipt":
            receipt = receipts.pop(0) if len(receipts) > 1 else receipts[0]
            if isinstance(receipt, int):
                return Reply.json({"error": "busy"}, status=receipt)
            return Reply.json([{"jsonrpc": "2.0", "id": 0, "result": receipt}])
        return Reply.json([{"jsonrpc": "2.0", "id": item["id"], "result": answers[item["method"]]}
                           for item in body])

    return handler


async def test_a_mined_claim_without_task_claimed_is_a_transaction_failure(
    account: LocalAccount,
) -> None:
    mined_empty = {"status": "0x1", "blockNumber": "0x2", "logs": []}
    with HostileServer(_scripted_node([503, None, mined_empty])) as server:
        backend = IExecBackend(server.url + "/rpc", HUB_ADDRESS, policy=FAST, signer=account)
        try:
            with pytest.raises(TransactionFailed, match="no TaskClaimed") as caught:
                await backend.claim("0x" + "22" * 32)
        finally:
            await backend.aclose()
        methods = [r.json()["method"] if isinstance(r.json(), dict) else r.json()[0]["method"]
                   for r in server.requests]
    assert type(caught.value) is TransactionFailed
    assert methods.count("eth_sendRawTransaction") == 1  # the 503 and null receipts: re-read
    assert methods.count("eth_getTransactionReceipt") == 3
