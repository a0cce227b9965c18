"""Best-effort parsing of a JSON prefix, for tool inputs that stream in pieces.

The AI SDK shows a tool's input while it streams by closing whatever is open
in the text so far; this does the same: an open string value is closed, an
unfinished key or literal is dropped or completed, open containers are closed.

>>> parse_partial_json('{"city": "Barc')
{'city': 'Barc'}
>>> parse_partial_json('[1, 2, tr')
[1, 2, True]
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["parse_partial_json"]

_LITERALS = ("true", "false", "null")


def parse_partial_json(text: str) -> Any:
    """The value ``text`` is a prefix of, or ``msgspec.UNSET`` when none can be had."""
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        pass
    try:
        return msgspec.json.decode(_repair(text))
    except msgspec.DecodeError:
        return msgspec.UNSET


def _repair(text: str) -> str:
    stack: list[str] = []  # "{" or "["
    expect_key: list[bool] = []  # per open object: is the next string a key?
    in_string = escape = False
    string_start = 0
    string_is_key = False
    for i, ch in enumerate(text):
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string, string_start = True, i
            string_is_key = bool(stack) and stack[-1] == "{" and expect_key[-1]
        elif ch in "{[":
            stack.append(ch)
            expect_key.append(ch == "{")
        elif ch in "}]":
            if stack:
                stack.pop()
                expect_key.pop()
        elif ch == ":" and stack and stack[-1] == "{":
            expect_key[-1] = False
        elif ch == "," and stack and stack[-1] == "{":
            expect_key[-1] = True
    head = text
    if in_string:
        if string_is_key:
            head = text[:string_start]
        else:
            if escape:
                head = head[:-1]
            # A half-written \\uXXXX escape cannot be closed: drop it.
            cut = head.rfind("\\u", max(string_start, len(head) - 5))
            if cut >= 0 and not _escaped(head, cut):
                head = head[:cut]
            head += '"'
    else:
        head = _complete_tail(head)
    head = head.rstrip()
    while head.endswith((",", ":")) or (head.endswith('"') and _dangling_key(head, stack)):
        if head.endswith(":") or head.endswith('"'):
            head = _drop_key(head)
        else:
            head = head[:-1].rstrip()
    return head + "".join("}" if c == "{" else "]" for c in reversed(stack))


def _escaped(text: str, pos: int) -> bool:
    n = 0
    while pos - n - 1 >= 0 and text[pos - n - 1] == "\\":
        n += 1
    return n % 2 == 1


def _complete_tail(head: str) -> str:
    stripped = head.rstrip()
    tail_start = len(stripped)
    while tail_start > 0 and (
        stripped[tail_start - 1].isalnum() or stripped[tail_start - 1] in "+-."
    ):
        tail_start -= 1
    tail = stripped[tail_start:]
    if not tail:
        return stripped
    for lit in _LITERALS:
        if lit.startswith(tail):
            return stripped[:tail_start] + lit
    while tail and tail[-1] in "+-.eE":
        tail = tail[:-1]
    return stripped[:tail_start] + tail


def _dangling_key(head: str, stack: list[str]) -> bool:
    # '{"a"' or '{"a": 1, "b"': a complete key string with no value after it.
    if not stack or stack[-1] != "{":
        return False
    start = _string_start(head)
    before = head[:start].rstrip()
    return before.endswith(("{", ","))


def _string_start(head: str) -> int:
    i = len(head) - 2
    while i >= 0:
        if head[i] == '"' and not _escaped(head, i):
            return i
        i -= 1
    return 0


def _drop_key(head: str) -> str:
    if head.endswith(":"):
        head = head[:-1].rstrip()
    if head.endswith('"'):
        head = head[: _string_start(head)].rstrip()
    if head.endswith(","):
        head = head[:-1].rstrip()
    return head
