"""What the official SDK saw, set beside what our client sees (``tests/conformance``).

The official SDK's steps are recorded by ``tests/helpers/sdk_driver.py``: each
call, its arguments, the HTTP exchange and the result's dump by wire names.
Here our client makes **the same call with the same arguments** (the SDK's
names are ours) against a raw server answering the very bytes the SDK got
(:func:`replay`), so that both the request it sends and the model it makes
can be compared with the SDK's, for every call, mutations included; and
:func:`same` compares two dumps by wire names.

>>> same({"at": "2026-01-01T09:00:00.000Z", "n": 3.0}, {"at": "2026-01-01T09:00:00Z", "n": 3})
[]
>>> same({"a": {"b": 1}}, {"a": {"b": 2, "c": 0}}, wire={"a": {"b": 1}})
['$.a.b: the SDK sees 1, ours 2']
>>> same({"id": "w"}, {"id": "w", "costs": {"usd": 1}, "steps": 0})
["$.costs: only ours has {'usd': 1}"]
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from handinger_stream import EmailAddress, Handinger, HandingerError, SyncWorkerStream
from handinger_stream.client.sync_base import SyncFileDownload
from tests.conftest import Canned, RawServer

__all__ = ["Replayed", "dump", "our_result", "replay", "same", "wire_body"]

Record = dict[str, Any]

# Where the seed's SDK (0.3.0) names a call otherwise than ours.
_OUR_NAMES = {"workers.stream_updates": "workers.subscribe"}


def wire_body(record: Record) -> Any:
    """The response body the SDK got, decoded when it is JSON."""
    exchange = record["exchange"]
    if "json" not in exchange["content_type"]:
        return exchange["body"]
    return json.loads(exchange["body"])


def dump(result: Any) -> Any:
    """Our result as JSON-like data by wire names (a stream: its final Worker)."""
    if isinstance(result, SyncWorkerStream):
        result = result.get_final_worker()
    if isinstance(result, SyncFileDownload):
        return result.read().decode("utf-8", "replace")
    if isinstance(result, str):  # EmailAddress: a str, with .email
        return str(result)
    return msgspec.to_builtins(result)


@dataclass
class Replayed:
    """Our client's side of one recorded step: its request, and its result or error."""

    method: str
    path: str
    body: Any
    result: Any = None
    error: HandingerError | None = None


def _our_call(client: Handinger, record: Record) -> Callable[[], Any]:
    """Our client's call for the SDK's: the same dotted name and arguments."""
    called: str = record["call"]
    name = _OUR_NAMES.get(called, called)
    args, kwargs = list(record["args"]), dict(record["kwargs"])
    if name == "workers.retrieve" and "stream" in kwargs:
        kwargs["stream"] = kwargs["stream"] in (True, "true")  # 0.18.0 types it "true" / "false"
    if name == "workers.retrieve_file":  # the SDK's (file_path, *, worker_id)
        args, kwargs = [kwargs.pop("worker_id"), *args], kwargs
    target: Any = client
    for part in name.split("."):
        target = getattr(target, part)
    return lambda: target(*args, **kwargs)


def our_result(client: Handinger, record: Record) -> Any:
    """What our client's call for the SDK's recorded one gives, dumped as the SDK's is."""
    made = _our_call(client, record)()
    if isinstance(made, EmailAddress) and isinstance(record["dump"], dict):
        return {"email": made.email}  # today's SDK answers an object, {email}
    return dump(made)


def replay(record: Record, server: RawServer, client: Handinger) -> Replayed:
    """Make the SDK's call through ``client``, whose base URL is ``server``'s, answered
    with the status, headers and body the SDK got."""
    exchange = record["exchange"]
    headers = exchange["headers"]
    server.serve(Canned([exchange["body"].encode()], status=exchange["status"], headers=headers))
    result: Any = None
    error: HandingerError | None = None
    try:
        result = our_result(client, record)
    except HandingerError as exc:
        error = exc
    assert len(server.requests) == 1, server.requests
    sent = server.requests[0]
    raw = sent["body"]
    body = json.loads(raw) if raw else None
    return Replayed(sent["method"], sent["path"], body, result, error)


_EMPTY: list[object] = [None, 0, "", [], {}]  # by ==: 0.0 and False too


def _instant(value: object) -> datetime | None:
    if not isinstance(value, str) or len(value) < 19 or value[10:11] != "T":
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def same(sdk: Any, ours: Any, wire: Any = None, where: str = "$") -> list[str]:
    """Where ``ours`` differs from ``sdk`` (dumps by wire names); empty when they agree.

    Every field the SDK has must be ours, with an equal value (ISO timestamps
    compared as instants, numbers as numbers); one the SDK has as ``None`` may
    be missing from ours when the server did not send it (our ``UNSET``). A
    field only ours has is allowed when the server did not send it (``wire``)
    and ours holds its empty default: our models carry both generations'
    fields, at their defaults when absent.
    """
    if isinstance(sdk, dict) and isinstance(ours, dict):
        wire = wire if isinstance(wire, dict) else {}
        found = []
        for key, value in sdk.items():
            if key not in ours:
                if value is None and key not in wire:
                    continue  # not sent: the SDK's None, our UNSET
                found.append(f"{where}.{key}: the SDK sees {value!r}, ours nothing")
            else:
                found += same(value, ours[key], wire.get(key), f"{where}.{key}")
        for key in sorted(ours.keys() - sdk):
            if key in wire:
                found.append(f"{where}.{key}: sent, yet only ours has it")
            elif ours[key] not in _EMPTY:
                found.append(f"{where}.{key}: only ours has {ours[key]!r}")
        return found
    if isinstance(sdk, list) and isinstance(ours, list) and len(sdk) == len(ours):
        wire = wire if isinstance(wire, list) and len(wire) == len(sdk) else [None] * len(sdk)
        return [d for i, s in enumerate(sdk) for d in same(s, ours[i], wire[i], f"{where}[{i}]")]
    left, right = _instant(sdk), _instant(ours)
    if left is not None and right is not None:
        return [] if left == right else [f"{where}: the SDK sees {sdk!r}, ours {ours!r}"]
    if isinstance(sdk, bool) or isinstance(ours, bool):  # True is not 1 here
        agree = sdk is ours
    else:
        agree = sdk == ours
    if agree:
        return []
    return [f"{where}: the SDK sees {sdk!r}, ours {ours!r}"]
