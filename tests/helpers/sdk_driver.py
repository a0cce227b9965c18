"""Drives the official ``handinger`` SDK through a list of steps and records what it saw.

It runs in two places: in this suite's environment, imported, for the SDK
installed there (0.3.0, the seed's generation); and as a script in a peer
environment of its own (``tests/helpers/peers.py``) for an SDK that conflicts
with it (0.18.0, today's), reading its input as JSON on stdin and writing its
records as JSON on stdout. So it needs nothing but the standard library, the
SDK and httpx (the SDK's own dependency), and names the SDK's calls by their
dotted names only (``"workers.schedules.create"``): the same code serves every
version.

A step is a dict:

- ``call``: the SDK's call, dotted from the client (``"tasks.create"``);
- ``args``, ``kwargs``: its arguments, where a string ``"$name.a.b"`` is the
  value at ``a.b`` of the dump saved as ``name`` by an earlier step;
- ``save``: the name to save this step's dump under;
- ``until``: ``{"a.b": value}``: call again (up to 15 s) until the dump has it
  (for reads: a call that changes something is not made twice);
- ``stream``: call it through ``with_streaming_response`` and keep the body
  (an SDK whose call casts an event stream to a model cannot call it plainly);
- ``raises``: the name of the SDK's exception the call must raise;
- ``lenient``: why this step's answer is known not to pass the SDK's strict
  validation: it is called on a client that does not validate, and the
  record's ``invalid`` says what strict validation finds wrong;
- ``label``: copied into the record, for the tests to find it by.

Each record holds the step's call and resolved arguments, the HTTP exchange
(method, path, request body, status, response headers and body), the
result's dump by wire names (``model_dump(mode="json", by_alias=True)``), the
fields the SDK's models did not declare and kept as extras (``extras``), and
the error, if any. Every other step's answer is validated strictly by the SDK
itself (``_strict_response_validation=True``): a response its models do not
accept fails the step.

>>> resolve({"id": "$made.id", "when": ["$made.ids.1"]}, {"made": {"id": "w1", "ids": [0, 7]}})
{'id': 'w1', 'when': [7]}
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import handinger
import httpx

__all__ = ["drive", "resolve"]

UNTIL_SECONDS = 15.0


def resolve(value: Any, saved: dict[str, Any]) -> Any:
    """``value`` with each ``"$name.path"`` replaced by what ``saved`` holds there."""
    if isinstance(value, str) and value.startswith("$"):
        name, *path = value[1:].split(".")
        return at(saved[name], path)
    if isinstance(value, list):
        return [resolve(v, saved) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, saved) for k, v in value.items()}
    return value


def at(value: Any, path: list[str]) -> Any:
    for key in path:
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


def dump(result: Any) -> tuple[Any, list[str]]:
    """A result as JSON-like data by wire names, and the paths of fields its model lacks."""
    if hasattr(result, "model_dump"):
        # No serializer warnings: a lenient step's model may hold what its type does not.
        return result.model_dump(mode="json", by_alias=True, warnings=False), extras(result, "$")
    if isinstance(result, (str, int, float, bool)) or result is None:
        return result, []
    if hasattr(result, "http_response"):  # a binary or streamed response: its bytes
        return result.http_response.content.decode("utf-8", "replace"), []
    raise TypeError(f"no dump for a {type(result).__name__}: call it with 'stream'")


def extras(model: Any, where: str) -> list[str]:
    """Where a model kept fields it does not declare (its ``__pydantic_extra__``)."""
    found = [f"{where}.{k}" for k in (getattr(model, "__pydantic_extra__", None) or {})]
    for name in type(model).model_fields:
        value = getattr(model, name, None)
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            if hasattr(item, "model_dump"):
                found += extras(
                    item, f"{where}.{name}" + (f"[{i}]" if isinstance(value, list) else "")
                )
    return found


def invalid(result: Any, body: str) -> list[str]:
    """What the SDK's strict validation finds wrong in ``body`` for ``result``'s model, as
    ``"loc: error type"``: a lenient step's answer, checked as a strict client would."""
    if not hasattr(result, "model_validate"):
        return []
    try:
        type(result).model_validate(json.loads(body))
    except ValueError as exc:  # pydantic's ValidationError
        return sorted(
            ".".join(map(str, e["loc"])) + ": " + e["type"]
            for e in exc.errors()  # type: ignore[attr-defined]
        )
    return []


def reached(value: Any, until: dict[str, Any]) -> bool:
    """Whether ``value`` holds each of ``until``'s values at its path (a missing one: not yet)."""
    try:
        return all(at(value, path.split(".")) == want for path, want in until.items())
    except (KeyError, IndexError, TypeError):
        return False


class Recorder:
    """The HTTP exchanges of the SDK's client, as an httpx response hook sees them."""

    def __init__(self) -> None:
        self.exchanges: list[dict[str, Any]] = []

    def __call__(self, response: httpx.Response) -> None:
        response.read()  # kept by httpx: the SDK reads (or streams) it again from memory
        request = response.request
        sent = request.content
        try:
            body: Any = json.loads(sent) if sent else None
        except ValueError:
            body = sent.decode("utf-8", "replace")
        self.exchanges.append(
            {
                "method": request.method,
                "path": request.url.raw_path.decode(),
                "request_body": body,
                "status": response.status_code,
                "content_type": response.headers.get("content-type", ""),
                "headers": {
                    k: v
                    for k, v in response.headers.items()
                    if k == "content-type" or k[:2] == "x-"
                },
                "body": response.text,
            }
        )


def drive(
    base_url: str, api_key: str, steps: list[dict[str, Any]], saved: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run ``steps`` with a client of the installed SDK; its version, records and saved dumps.

    It stops at the first step that fails unexpectedly; that record has its ``error``.
    """
    saved = dict(saved or {})
    recorder = Recorder()
    http = httpx.Client(event_hooks={"response": [recorder]}, timeout=30)
    clients = {
        strict: handinger.Handinger(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            http_client=http,
            _strict_response_validation=strict,
        )
        for strict in (True, False)
    }
    records: list[dict[str, Any]] = []
    with http:
        for number, step in enumerate(steps):
            client = clients["lenient" not in step]
            record = run_step(client, recorder, step, saved)
            record["step"] = number
            records.append(record)
            if record["error"] is not None and not record["expected_error"]:
                break
            if "save" in step:
                saved[step["save"]] = record["dump"]
    return {"version": handinger.__version__, "records": records, "saved": saved}


def run_step(
    client: Any, recorder: Recorder, step: dict[str, Any], saved: dict[str, Any]
) -> dict[str, Any]:
    args = resolve(step.get("args", []), saved)
    kwargs = resolve(step.get("kwargs", {}), saved)
    *owners, method = step["call"].split(".")
    target = client
    for owner in owners:
        target = getattr(target, owner)
    if step.get("stream"):
        target = target.with_streaming_response
    call = getattr(target, method)
    record: dict[str, Any] = {
        "label": step.get("label"),
        "call": step["call"],
        "args": args,
        "kwargs": kwargs,
        "stream": bool(step.get("stream")),
        "dump": None,
        "extras": [],
        "error": None,
        "expected_error": False,
        "attempts": 0,
        "invalid": [],
    }
    deadline = time.monotonic() + UNTIL_SECONDS
    while True:
        record["attempts"] += 1
        sent = len(recorder.exchanges)
        try:
            if step.get("stream"):
                with call(*args, **kwargs) as response:
                    response.read()
                    result = response
            else:
                result = call(*args, **kwargs)
            record["dump"], record["extras"] = dump(result)
            if "lenient" in step:  # built without validation: its extras mean nothing
                record["invalid"] = invalid(result, recorder.exchanges[-1]["body"])
                record["extras"] = None
        except Exception as exc:
            record["error"] = {
                "type": type(exc).__name__,
                "status": getattr(exc, "status_code", None),
                "message": str(exc)[:500],
            }
            record["expected_error"] = step.get("raises") == type(exc).__name__
        else:
            if "raises" in step:
                record["error"] = {"type": None, "status": None, "message": "nothing raised"}
        # None when the SDK refused the call before sending anything.
        record["exchange"] = recorder.exchanges[-1] if len(recorder.exchanges) > sent else None
        until = step.get("until", {})
        if record["error"] is not None or reached(record["dump"], until):
            return record
        if time.monotonic() > deadline:
            record["error"] = {"type": "Timeout", "status": None, "message": f"never {until}"}
            return record
        time.sleep(0.05)


def main() -> None:
    given = json.load(sys.stdin)
    out = drive(given["base_url"], given["api_key"], given["steps"], given.get("saved"))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
