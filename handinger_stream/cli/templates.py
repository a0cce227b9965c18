"""``handinger-stream workers``: worker templates of today's API, made, changed, deleted.

    handinger-stream workers create --instructions "Answer in Catalan" --title Catalan
    handinger-stream workers create --prompt "a terse analyst" --output-schema schema.json
    handinger-stream workers update wrk_1 --title Analyst --clear-output-schema
    handinger-stream workers delete wrk_1

``create`` and ``update`` print the template's id on stdout (``ID=$(...)`` in a
script), a line about it on stderr; with ``--json`` the WorkerTemplate.
Run one with ``handinger-stream run --worker ID "PROMPT"``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from ..client.async_client import AsyncHandinger
from ..errors import InvalidRequestError
from ..types.worker_template import WorkerTemplate
from .connection import add_command, add_service_options, call, done_or_not, print_json
from .exit_codes import EXIT_OK, EXIT_USAGE
from .printing import say

__all__ = ["add_parser", "command", "read_schema"]

_JSON_HELP = "print the WorkerTemplate as one JSON object"
_VISIBILITIES = ("public", "private")


def add_parser(sub: Any) -> None:
    """Register ``workers`` (``create``, ``update``, ``delete``) on the subcommands."""
    workers = add_command(
        sub,
        "workers",
        help="make, change or delete a worker template (today's API)",
        description=(
            "A worker is a reusable agent template: instructions, an optional output\n"
            "JSON Schema, a title. Run one with: handinger-stream run --worker ID PROMPT."
        ),
    )
    actions = workers.add_subparsers(dest="action", required=True)
    create = add_command(
        actions,
        "create",
        help="make a worker template",
        description=(
            "Make a worker template from --instructions, or from a --prompt describing\n"
            "them (the service writes the instructions). Prints its id on stdout.\n"
            "Without HANDINGER_API_KEY, --api-key or a base URL, it is made on the\n"
            "embedded emulator (and gone when the command ends)."
        ),
    )
    source = create.add_mutually_exclusive_group()
    source.add_argument("--instructions", metavar="T", help="the worker's standing instructions")
    source.add_argument(
        "--prompt", metavar="T", help="a description the service writes instructions from"
    )
    _template_options(create)
    add_service_options(create, json_help=_JSON_HELP)

    update = add_command(
        actions,
        "update",
        help="change a worker template",
        description=(
            "Change the fields given; the rest stay. Tasks already running keep the\n"
            "instructions they started with. Prints the template's id on stdout."
        ),
    )
    update.add_argument("worker_id", metavar="ID", help="the worker template's id")
    update.add_argument("--instructions", metavar="T", help="new standing instructions")
    _template_options(update)
    update.add_argument(
        "--clear-output-schema",
        action="store_true",
        help="remove the output schema (answers are plain text again)",
    )
    add_service_options(update, json_help=_JSON_HELP)

    delete = add_command(
        actions,
        "delete",
        help="delete a worker template",
        description="Delete a worker template. Exit 1 when the service did not delete it.",
    )
    delete.add_argument("worker_id", metavar="ID", help="the worker template's id")
    add_service_options(delete, json_help='print the answer as one JSON object: {"deleted": …}')


def _template_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--title", help="a title, shown in the service's lists")
    parser.add_argument("--summary", help="a line on what the worker is for")
    parser.add_argument(
        "--visibility", choices=_VISIBILITIES, help="who may see it (the service's default: public)"
    )
    parser.add_argument(
        "--output-schema",
        metavar="FILE",
        help="a JSON Schema (draft-07) file the answer must fit, or - for stdin; "
        "the result comes back as structured_output",
    )


def command(args: argparse.Namespace) -> int:
    """Run ``handinger-stream workers ...`` with parsed arguments; the exit code."""
    if args.action == "delete":
        return call(args, lambda client: _delete(client, args))
    try:
        schema = read_schema(args.output_schema) if args.output_schema else None
    except InvalidRequestError as exc:
        say(f"error: {exc}")
        return EXIT_USAGE
    if args.action == "create":
        return call(args, lambda client: _create(client, args, schema), embedded_ok=True)
    if schema is not None and args.clear_output_schema:
        say("error: --output-schema and --clear-output-schema: one or the other")
        return EXIT_USAGE
    fields: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("instructions", "title", "summary", "visibility")
        if getattr(args, name) is not None
    }
    if schema is not None:
        fields["output_schema"] = schema
    elif args.clear_output_schema:
        fields["output_schema"] = None
    if not fields:
        say(
            "error: nothing to change: give --instructions, --title, --summary, --visibility, "
            "--output-schema or --clear-output-schema"
        )
        return EXIT_USAGE
    return call(args, lambda client: _update(client, args, fields))


def read_schema(path: str) -> dict[str, Any]:
    """The JSON Schema in ``path`` (``-``: stdin), which must be a JSON object."""
    where = "stdin" if path == "-" else path
    try:
        if path == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as handle:
                raw = handle.read()
    except OSError as exc:
        raise InvalidRequestError(f"--output-schema {where}: {exc.strerror or exc}") from None
    try:
        schema = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"--output-schema {where}: not JSON ({exc})") from None
    if not isinstance(schema, dict):
        raise InvalidRequestError(f"--output-schema {where}: a JSON Schema is a JSON object")
    return schema


async def _create(
    client: AsyncHandinger, args: argparse.Namespace, schema: dict[str, Any] | None
) -> int:
    template = await client.workers.create(
        instructions=args.instructions,
        prompt=args.prompt,
        title=args.title,
        summary=args.summary,
        visibility=args.visibility,
        output_schema=schema,
    )
    _show(args, template, "created")
    return EXIT_OK


async def _update(client: AsyncHandinger, args: argparse.Namespace, fields: dict[str, Any]) -> int:
    # Only the fields given are sent: output_schema=None is the one that clears.
    template = await client.workers.update(args.worker_id, **fields)
    _show(args, template, "updated")
    return EXIT_OK


async def _delete(client: AsyncHandinger, args: argparse.Namespace) -> int:
    answer = await client.workers.delete(args.worker_id)
    what = f"worker template {args.worker_id}"
    return done_or_not(args, answer, answer.deleted, did="deleted", do="delete", what=what)


def _show(args: argparse.Namespace, template: WorkerTemplate, done: str) -> None:
    if args.json:
        print_json(template)
        return
    print(template.id, flush=True)
    title = f" {template.title!r}" if template.title else ""
    schema = ", with an output schema" if template.output_schema else ""
    say(f"{done} worker template {template.id}{title} ({template.visibility}{schema})")
    if template.url:
        say(f"  {template.url}")
