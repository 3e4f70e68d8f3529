"""The emulated node's WebSocket (``eth_subscribe``/``eth_unsubscribe``) and its chain controls.

A connection answers JSON-RPC calls like the HTTP endpoint, and wakes at every block boundary
to mine and push ``eth_subscription`` notifications: the new logs matching each "logs"
subscription's filter, and each new header to "newHeads" subscriptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ._chain import Ledger, LogFilter

__all__ = ["chain_routes"]

Answer = Callable[[Any], dict[str, Any]]
_SERVICE_RESTART = 1012  # the close code of a dropped connection
_WAKE_SLACK = 0.0005  # wake this long after a block boundary


class _Connection:
    """One WebSocket client: its subscriptions and how far it has been sent the chain."""

    def __init__(self, socket: WebSocket, ledger: Ledger, answer: Answer) -> None:
        self.socket = socket
        self.ledger = ledger
        self.answer = answer
        self.logs: dict[str, LogFilter] = {}
        self.heads: set[str] = set()
        self.head = ledger.sync()
        self.position = ledger.position()
        self.dropped = asyncio.Event()
        self._send_lock = asyncio.Lock()

    async def serve(self) -> None:
        jobs = [
            asyncio.ensure_future(self._receive()),
            asyncio.ensure_future(self._push()),
            asyncio.ensure_future(self.dropped.wait()),
        ]
        try:
            await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
        if self.dropped.is_set():
            with contextlib.suppress(Exception):
                await self.socket.close(_SERVICE_RESTART)

    async def _send(self, message: Any) -> None:
        await self._send_texts([json.dumps(message)])

    async def _send_texts(self, texts: Sequence[str]) -> None:
        async with self._send_lock:
            for text in texts:
                await self.socket.send_text(text)

    async def _receive(self) -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                text = await self.socket.receive_text()
                try:
                    body = json.loads(text)
                except ValueError:
                    await self._send(_error(None, -32700, "Parse error"))
                    continue
                if isinstance(body, list):
                    await self._send([self._call(item) for item in body])
                else:
                    await self._send(self._call(body))

    def _call(self, item: Any) -> dict[str, Any]:
        method = item.get("method") if isinstance(item, dict) else None
        if method not in ("eth_subscribe", "eth_unsubscribe"):
            return self.answer(item)
        call_id = item.get("id")
        params = item.get("params")
        if not isinstance(params, list) or not params:
            return _error(call_id, -32602, f"invalid params: {method} takes a list")
        if method == "eth_unsubscribe":
            known = params[0] in self.logs or params[0] in self.heads
            self.logs.pop(params[0], None)
            self.heads.discard(params[0])
            return {"jsonrpc": "2.0", "id": call_id, "result": known}
        sub_id = "0x" + secrets.token_hex(16)
        if params[0] == "newHeads":
            self.heads.add(sub_id)
        elif params[0] == "logs":
            raw = params[1] if len(params) > 1 else {}
            try:
                self.logs[sub_id] = LogFilter(raw if isinstance(raw, dict) else {})
            except ValueError as exc:
                return _error(call_id, -32602, f"invalid params: {exc}")
        else:
            return _error(call_id, -32602, f"invalid params: unsupported subscription {params[0]}")
        return {"jsonrpc": "2.0", "id": call_id, "result": sub_id}

    async def _push(self) -> None:
        ledger = self.ledger
        while True:
            delay = ledger.clock.landed_at(self.head + 1) - time.time() + _WAKE_SLACK
            await asyncio.sleep(max(delay, 0.0))
            head = ledger.sync()
            if head <= self.head:
                continue
            self.position, logs = ledger.since(self.position)
            out: list[str] = []
            for sub_id in list(self.heads):
                out += [json.dumps(_note(sub_id, ledger.block(n)))
                        for n in range(self.head + 1, head + 1)]
            subs = list(self.logs.items())
            for entry in logs:  # each log's JSON was encoded once, when it was made
                out += [_NOTE % (sub_id, entry.text) for sub_id, wanted in subs
                        if wanted.matches(entry)]
            self.head = head
            await self._send_texts(out)


#: A log notification around a subscription id and a log's JSON text.
_NOTE = '{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"%s","result":%s}}'


def _note(sub_id: str, result: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0", "method": "eth_subscription",
        "params": {"subscription": sub_id, "result": result},
    }


def _error(call_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call_id, "error": {"code": code, "message": message}}


def chain_routes(ledger: Ledger, answer: Answer) -> Sequence[BaseRoute]:
    """The node's WebSocket on ``/rpc`` and the chain controls under ``/_chain``."""
    connections: set[_Connection] = set()

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        connection = _Connection(websocket, ledger, answer)
        connections.add(connection)
        try:
            await connection.serve()
        finally:
            connections.discard(connection)

    def state() -> dict[str, Any]:
        head = ledger.sync()
        return {
            "head": head, "block_time": ledger.clock.block_time,
            "landed_at": ledger.landed_at(head), "connections": len(connections),
        }

    async def chain(request: Request) -> Response:
        if request.method == "POST":
            body = await _body(request)
            try:
                ledger.clock.set_block_time(float(body.get("block_time", 0)))
            except (TypeError, ValueError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=422)
        return JSONResponse(state())

    async def reorg(request: Request) -> Response:
        task_id = str((await _body(request)).get("task_id", "")).lower()
        return JSONResponse({"removed": len(ledger.reorg(task_id))})

    async def drop(request: Request) -> Response:
        for connection in list(connections):
            connection.dropped.set()
        return JSONResponse({"dropped": len(connections)})

    return [
        WebSocketRoute("/rpc", socket),
        Route("/_chain", chain, methods=["GET", "POST"]),
        Route("/_chain/reorg", reorg, methods=["POST"]),
        Route("/_chain/drop", drop, methods=["POST"]),
    ]


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
