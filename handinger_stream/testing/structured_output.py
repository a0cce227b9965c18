"""Structured output: a template's ``outputSchema`` checked, and an object made to fit it.

The schema is JSON Schema draft-07, checked by the ``jsonschema`` library
(:func:`check_schema`, on create and update). Each finished turn of a
template with a schema gets an object made from the schema by
:func:`instance_for` (deterministic for its ``rng``, its strings taken from
the turn's answer), then validated by ``jsonschema`` before it is sent
(:func:`structured_output`).

The generator reads ``type`` (one or a list), ``const``, ``enum``,
``properties``, ``required``, ``additionalProperties``, ``minProperties``,
``items`` (one schema or a list), ``minItems``, ``maxItems``,
``uniqueItems``, ``minimum``, ``maximum``, ``exclusiveMinimum``,
``exclusiveMaximum``, ``multipleOf`` (whole numbers), ``minLength``,
``maxLength``, ``format`` (``date-time``, ``date``, ``time``, ``email``,
``uri``, ``uuid``, ``ipv4``, ``hostname``), ``anyOf`` / ``oneOf`` (their
first branch) and ``$ref`` into the schema's own ``definitions``. Other
keywords are left to the validator: an object that misses them is refused
there, and a schema the generator cannot fit is refused when it is set.

>>> import random
>>> schema = {"type": "object", "required": ["city", "temp"],
...     "properties": {"city": {"type": "string", "maxLength": 20},
...                    "temp": {"type": "integer", "minimum": -10, "maximum": 40}}}
>>> out = structured_output(schema, random.Random(1), "Sunny and mild in Barcelona today.")
>>> sorted(out) == ["city", "temp"] and -10 <= out["temp"] <= 40
True
"""

from __future__ import annotations

import copy
import math
import random
import uuid
from typing import Any

import msgspec

from ..errors import excerpt
from .refusals import Refusal, require

__all__ = ["LIMITS", "Unfit", "check_schema", "instance_for", "structured_output", "violation"]

# Bounds on what a schema may ask for and what the generator makes: a schema
# arrives over the network, and must not make the emulator build a huge object.
LIMITS = {
    "schema_bytes": 64 * 1024,  # the schema, encoded
    "nesting": 40,  # levels of the schema document (dicts and lists)
    "depth": 24,  # schemas inside schemas while generating ($ref followed included)
    "items": 100,  # minItems / minProperties the generator will satisfy
    "length": 2_000,  # minLength it will satisfy
    "nodes": 5_000,  # values in one generated object
}
_EXTRA_ITEMS = 3  # at most this many items beyond minItems
_WHAT = "a worker's outputSchema"  # what needs jsonschema, in the message when it is missing


class Unfit(ValueError):
    """The generator cannot make a value for this schema (it says which part and why)."""


def check_schema(schema: Any) -> None:
    """Refuse (422, naming ``outputSchema``) a schema that is not a draft-07 object schema.

    >>> check_schema({"type": "object", "properties": {"n": {"type": "integer"}}})
    >>> check_schema({"type": "object", "properties": {"n": {"type": "integer", "minimum": "1"}}})
    Traceback (most recent call last):
      ...
    handinger_stream.testing.refusals.Refusal: outputSchema: not a valid JSON Schema (draft-07): \
'1' is not of type 'number' (at properties/n/minimum)
    """
    if not isinstance(schema, dict):
        raise Refusal(422, "outputSchema: must be a JSON Schema object, or null")
    if len(msgspec.json.encode(schema)) > LIMITS["schema_bytes"]:
        raise Refusal(422, f"outputSchema: larger than {LIMITS['schema_bytes']} bytes")
    if _depth(schema) > LIMITS["nesting"]:
        raise Refusal(422, f"outputSchema: nested deeper than {LIMITS['nesting']} levels")
    jsonschema = require("jsonschema", _WHAT)
    try:
        jsonschema.Draft7Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        at = f" (at {where})" if where else ""
        raise Refusal(
            422, f"outputSchema: not a valid JSON Schema (draft-07): {exc.message}{at}"
        ) from None
    if schema.get("type") != "object":
        raise Refusal(
            422,
            'outputSchema: structured output is an object: the schema needs "type": "object" '
            "at its top",
        )
    # Made once now with a fixed draw: a schema the emulator cannot fit is refused here,
    # when it is set, rather than failing every turn later.
    try:
        instance = instance_for(schema, random.Random(0), "", complete=True)
    except Unfit as exc:
        raise Refusal(
            422, f"outputSchema: the emulator cannot make an object for it: {exc}"
        ) from None
    problem = violation(instance, schema)
    if problem is not None:
        raise Refusal(
            422,
            f"outputSchema: the emulator cannot make an object for it: {problem} "
            "(see docs/emulator.md for the keywords it reads)",
        )


def violation(instance: Any, schema: dict[str, Any]) -> str | None:
    """Why ``instance`` does not fit ``schema`` (the first error ``jsonschema`` finds), or None.

    >>> violation({"n": "x"}, {"type": "object", "properties": {"n": {"type": "integer"}}})
    "'x' is not of type 'integer' (at n)"
    """
    jsonschema = require("jsonschema", _WHAT)
    errors = jsonschema.Draft7Validator(schema).iter_errors(instance)
    error = jsonschema.exceptions.best_match(errors)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    message = excerpt(str(error.message), 300)  # it quotes the value, which may be long
    return f"{message} (at {where})" if where else message


def structured_output(schema: dict[str, Any], rng: random.Random, text: str) -> dict[str, Any]:
    """An object for ``schema``, validated; :class:`Unfit` if none could be made that fits."""
    instance = instance_for(schema, rng, text)
    problem = violation(instance, schema)
    if problem is not None:
        raise Unfit(problem)
    if not isinstance(instance, dict):
        raise Unfit("the schema did not give an object")
    return instance


def instance_for(schema: Any, rng: random.Random, text: str, *, complete: bool = False) -> Any:
    """A value for ``schema``: the same ``rng`` state and ``text`` always give the same value.

    Strings are runs of ``text``'s words (or filler words), fitted to their
    length bounds. ``complete``: every property and an item in every array
    that may have one, so that each part of the schema is tried (when it is set).

    >>> instance_for({"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 2},
    ...     random.Random(3), "")
    ['a', 'b', 'b']
    >>> instance_for({"type": "string", "maxLength": 12}, random.Random(1), "Mild and sunny today")
    'and sunny'
    """
    words = text.split() or ["lorem", "ipsum", "dolor", "sit", "amet"]
    return _Maker(schema, rng, words, complete).make(schema, 0)


class _Maker:
    def __init__(self, root: Any, rng: random.Random, words: list[str], complete: bool) -> None:
        self.root, self.rng, self.words, self.complete = root, rng, words, complete
        self.nodes = 0

    def make(self, schema: Any, depth: int) -> Any:
        if depth > LIMITS["depth"]:
            raise Unfit(f"nested deeper than {LIMITS['depth']} levels (a $ref that loops?)")
        self.nodes += 1
        if self.nodes > LIMITS["nodes"]:
            raise Unfit(f"more than {LIMITS['nodes']} values in one object")
        if schema is True or schema == {}:
            return self._string({})
        if not isinstance(schema, dict):
            raise Unfit("a schema of false admits no value")
        if "$ref" in schema:
            return self.make(self._resolve(schema["$ref"]), depth + 1)
        if "const" in schema:
            return copy.deepcopy(schema["const"])
        if "enum" in schema:
            choices = schema["enum"]
            if not choices:
                raise Unfit("an empty enum admits no value")
            return copy.deepcopy(choices[self.rng.randrange(len(choices))])
        for branches in ("anyOf", "oneOf"):
            if isinstance(schema.get(branches), list) and schema[branches]:
                return self.make(schema[branches][0], depth + 1)
        kind = self._type(schema)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "string":
            return self._string(schema)
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return self.rng.random() < 0.5
        return None

    def _type(self, schema: dict[str, Any]) -> str:
        kind = schema.get("type")
        if isinstance(kind, list):
            # Something rather than nothing: null only if it is the one type allowed.
            kinds = [k for k in kind if k != "null"] or ["null"]
            return str(kinds[self.rng.randrange(len(kinds))])
        if isinstance(kind, str):
            return kind
        if any(k in schema for k in ("properties", "required", "additionalProperties")):
            return "object"
        if any(k in schema for k in ("items", "minItems", "maxItems")):
            return "array"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
            return "number"
        return "string"

    def _resolve(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise Unfit(f"only $ref into the schema itself is followed; got {ref!r}")
        node = self.root
        for raw in ref[1:].split("/")[1:]:
            key = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise Unfit(f"$ref {ref!r} points nowhere")
        return node

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        required = [name for name in schema.get("required") or [] if isinstance(name, str)]
        extra = schema.get("additionalProperties", True)
        names = list(required)
        # The optional properties too, mostly: a model asked for them usually fills them.
        names += [
            n for n in properties if n not in names and (self.complete or self.rng.random() < 0.8)
        ]
        want = schema.get("minProperties", 0)
        if isinstance(want, int) and want > LIMITS["items"]:
            raise Unfit(f"minProperties {want} is more than the {LIMITS['items']} it fills")
        spare = (n for n in properties if n not in names)
        while len(names) < want:
            name = next(spare, None)
            if name is None:
                if extra is False:
                    raise Unfit("minProperties is more than its properties")
                name = f"field{len(names)}"
            names.append(name)
        out: dict[str, Any] = {}
        for name in names:
            if name in properties:
                sub = properties[name]
            elif isinstance(extra, dict):
                sub = extra
            elif extra is False:
                raise Unfit(f"required {name!r} is not among its properties")
            else:
                sub = {"type": "string"}
            out[name] = self.make(sub, depth + 1)
        return out

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        items = schema.get("items", {})
        low = _whole(schema.get("minItems"), 0)
        high = _whole(schema.get("maxItems"), low + _EXTRA_ITEMS)
        if low > LIMITS["items"]:
            raise Unfit(f"minItems {low} is more than the {LIMITS['items']} it fills")
        if isinstance(items, list):  # a tuple: one schema per position, then additionalItems
            extra = schema.get("additionalItems", {})
            if extra is False:
                high = min(high, len(items))
        if high < low:
            raise Unfit(f"maxItems {high} is below minItems {low}")
        count = self.rng.randint(low, min(high, low + _EXTRA_ITEMS))
        if self.complete:
            count = max(count, min(high, 1 if not isinstance(items, list) else len(items)))
        if isinstance(items, list):
            return [
                self.make(items[i] if i < len(items) else extra, depth + 1) for i in range(count)
            ]
        out: list[Any] = []
        tries = 0
        while len(out) < count:
            value = self.make(items, depth + 1)
            if schema.get("uniqueItems") is True and value in out:
                tries += 1
                if tries > 20 * (count + 1):
                    if len(out) >= low:
                        break  # fewer, but all different: still within bounds
                    raise Unfit("uniqueItems: not enough different values for minItems")
                continue
            out.append(value)
        return out

    def _string(self, schema: dict[str, Any]) -> str:
        low = _whole(schema.get("minLength"), 0)
        high = _whole(schema.get("maxLength"), max(low, 60))
        if low > LIMITS["length"]:
            raise Unfit(f"minLength {low} is more than the {LIMITS['length']} it fills")
        if high < low:
            raise Unfit(f"maxLength {high} is below minLength {low}")
        shaped = self._format(schema.get("format"))
        if shaped is not None and low <= len(shaped) <= high:
            return shaped
        start = self.rng.randrange(len(self.words))
        text = " ".join(self.words[start : start + self.rng.randint(2, 6)]).strip(" .,;:")
        while len(text) < low:
            text += " " + self.words[self.rng.randrange(len(self.words))]
        return text[:high].rstrip() if len(text[:high].rstrip()) >= low else text[:high]

    def _format(self, name: Any) -> str | None:
        rng = self.rng
        day = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        clock = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00"
        shaped = {
            "date-time": f"{day}T{clock}Z",
            "date": day,
            "time": f"{clock}Z",
            "email": f"worker{rng.randint(1, 999)}@example.com",
            "uri": f"https://example.com/{rng.randint(1, 999)}",
            "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "ipv4": f"192.0.2.{rng.randint(1, 254)}",
            "hostname": f"host{rng.randint(1, 999)}.example.com",
        }
        return shaped.get(name) if isinstance(name, str) else None

    def _bounds(self, schema: dict[str, Any], whole: bool) -> tuple[float, float]:
        """The closed range a value may take: exclusive bounds moved in by one step."""
        lows, highs = [], []
        if _number(schema.get("minimum")):
            lows.append(schema["minimum"])
        if _number(schema.get("maximum")):
            highs.append(schema["maximum"])
        if _number(schema.get("exclusiveMinimum")):
            floor_: float = schema["exclusiveMinimum"]
            lows.append(math.floor(floor_) + 1 if whole else floor_ + 0.01)
        if _number(schema.get("exclusiveMaximum")):
            ceil_: float = schema["exclusiveMaximum"]
            highs.append(math.ceil(ceil_) - 1 if whole else ceil_ - 0.01)
        low, high = (max(lows) if lows else None), (min(highs) if highs else None)
        if low is None and high is None:
            return 0, 1000
        if low is None:
            assert high is not None
            return high - 1000, high
        if high is None:
            return low, low + 1000
        return low, high

    def _integer(self, schema: dict[str, Any]) -> int:
        low, high = self._bounds(schema, whole=True)
        lo, hi = math.ceil(low), math.floor(high)
        step = schema.get("multipleOf")
        if isinstance(step, int) and not isinstance(step, bool) and step > 0:
            first, last = math.ceil(lo / step), math.floor(hi / step)
            if first > last:
                raise Unfit(f"no multiple of {step} between {low} and {high}")
            return int(self.rng.randint(first, last) * step)
        if lo > hi:
            raise Unfit(f"no integer between {low} and {high}")
        return self.rng.randint(lo, hi)

    def _number(self, schema: dict[str, Any]) -> float | int:
        step = schema.get("multipleOf")
        if isinstance(step, int) and not isinstance(step, bool):
            return self._integer(schema)
        low, high = self._bounds(schema, whole=False)
        if low > high:
            # A gap narrower than the step: its middle, if that is strictly inside.
            floor_ = max(_given(schema, "minimum", "exclusiveMinimum"))
            ceil_ = min(_given(schema, "maximum", "exclusiveMaximum"))
            middle = (floor_ + ceil_) / 2
            if floor_ < middle < ceil_:
                return middle
            raise Unfit(f"no number between {floor_} and {ceil_}")
        value = round(self.rng.uniform(low, high), 2)
        return min(max(value, low), high)


def _whole(value: Any, default: int) -> int:
    whole = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if whole else default


def _given(schema: dict[str, Any], *names: str) -> list[float]:
    return [schema[n] for n in names if _number(schema.get(n))]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _depth(schema: Any) -> int:
    """How deep ``schema`` nests (without recursion: a hostile schema may nest very deep)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > LIMITS["nesting"]:
            break
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return deepest
