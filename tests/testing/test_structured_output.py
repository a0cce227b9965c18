"""The structured-output generator: any schema it reads gives an object jsonschema accepts."""

from __future__ import annotations

import random
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no type hints shipped
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handinger_stream.testing.refusals import Refusal
from handinger_stream.testing.structured_output import (
    Unfit,
    check_schema,
    instance_for,
    structured_output,
    violation,
)

_words = st.text(alphabet="abcdefghij XYZ.", max_size=60)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)


@st.composite
def _strings(draw: st.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    low = draw(st.none() | st.integers(0, 30))
    high = draw(st.none() | st.integers(low or 0, 60))
    if low is not None:
        schema["minLength"] = low
    if high is not None:
        schema["maxLength"] = high
    fmt = draw(st.none() | st.sampled_from(["date-time", "date", "email", "uri", "uuid"]))
    if fmt is not None:
        schema["format"] = fmt
    return schema


@st.composite
def _numbers(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["integer", "number"]))
    schema: dict[str, Any] = {"type": kind}
    low = draw(st.none() | st.integers(-500, 500))
    high = draw(st.none() | st.integers(low if low is not None else -500, 1000))
    exclusive = draw(st.booleans())
    if low is not None and high is not None and exclusive and high - low < 3:
        high = low + 3  # room for a whole number strictly between
    if low is not None:
        schema["exclusiveMinimum" if exclusive else "minimum"] = low
    if high is not None:
        schema["exclusiveMaximum" if exclusive else "maximum"] = high
    if kind == "integer" and draw(st.booleans()) and low is None and high is None:
        schema["multipleOf"] = draw(st.integers(1, 7))
    return schema


def _leaves() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        _strings(),
        _numbers(),
        st.just({"type": "boolean"}),
        st.just({"type": "null"}),
        st.lists(_scalars, min_size=1, max_size=5).map(lambda values: {"enum": values}),
        _scalars.map(lambda value: {"const": value}),
        st.just({"type": ["string", "null"]}),
    )


def _extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def arrays(draw: st.DrawFn) -> dict[str, Any]:
        low = draw(st.integers(0, 4))
        schema: dict[str, Any] = {"type": "array", "items": draw(children), "minItems": low}
        if draw(st.booleans()):
            schema["maxItems"] = draw(st.integers(low, low + 5))
        return schema

    return arrays() | _objects(children) | children.map(lambda c: {"anyOf": [c, {"type": "null"}]})


@st.composite
def _objects(draw: st.DrawFn, children: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    names = draw(
        st.lists(st.text(alphabet="abcdefgh_", min_size=1, max_size=6), unique=True, max_size=5)
    )
    properties = {name: draw(children) for name in names}
    required = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if draw(st.booleans()):
        schema["additionalProperties"] = False
    return schema


SCHEMAS = _objects(st.recursive(_leaves(), _extend, max_leaves=12))


@settings(max_examples=300, deadline=None)
@given(schema=SCHEMAS, seed=st.integers(0, 2**32), text=_words)
def test_every_schema_the_generator_reads_gives_a_valid_object(
    schema: dict[str, Any], seed: int, text: str
) -> None:
    jsonschema.Draft7Validator.check_schema(schema)
    made = structured_output(schema, random.Random(seed), text)
    jsonschema.Draft7Validator(schema).validate(made)
    check_schema(schema)  # and a template accepts it


@settings(max_examples=50, deadline=None)
@given(schema=SCHEMAS, seed=st.integers(0, 2**32))
def test_the_same_draw_gives_the_same_object(schema: dict[str, Any], seed: int) -> None:
    first = instance_for(schema, random.Random(seed), "the same words")
    assert instance_for(schema, random.Random(seed), "the same words") == first


def test_references_into_the_schema_are_followed_and_loops_bounded() -> None:
    schema = {
        "type": "object",
        "required": ["point"],
        "properties": {"point": {"$ref": "#/definitions/point"}},
        "definitions": {
            "point": {
                "type": "object",
                "required": ["x", "y"],
                "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
            }
        },
    }
    made = structured_output(schema, random.Random(0), "")
    assert set(made["point"]) == {"x", "y"}
    looping = {"type": "object", "required": ["a"], "properties": {"a": {"$ref": "#"}}}
    with pytest.raises(Unfit, match="deeper"):
        instance_for(looping, random.Random(0), "")


def test_what_the_generator_cannot_fit_is_refused_when_set() -> None:
    with pytest.raises(Refusal, match="cannot make") as caught:
        check_schema({"type": "object", "required": ["p"], "properties": {"p": {"pattern": "^x$"}}})
    assert caught.value.status == 422
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(30):
        deep = {"type": "object", "properties": {"a": deep}}
    with pytest.raises(Refusal, match="deeper"):
        check_schema(deep)
    assert violation({"a": 1}, {"type": "object", "properties": {"a": {"type": "string"}}})
