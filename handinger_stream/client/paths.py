"""An id or a file's path as URL path segments: nothing the caller gives can leave its
segment and reach another API path (which would get the key).

>>> "/api/workers/" + path_segment("wrk/../x", "worker_id")
'/api/workers/wrk%2F..%2Fx'
"""

from __future__ import annotations

from urllib.parse import quote

from ..errors import InvalidRequestError

__all__ = ["checked_id", "file_path", "path_segment"]


def checked_id(value: str, name: str) -> str:
    """``value``, an id the caller gave as ``name``, if it is a non-empty string."""
    if not isinstance(value, str) or not value:
        raise InvalidRequestError(f"{name} must be a non-empty string; got {value!r}")
    return value


def path_segment(value: str, name: str) -> str:
    """An id as one segment of a URL path: ``/`` and ``..`` cannot leave it.

    Quoting keeps ``/``, ``?``, ``#`` and ``%`` inside the segment; ``.`` and
    ``..`` are refused whole, since the libraries resolve them in a path
    (``/api/workers/..`` is ``/api/``), and another API path would get the key.

    >>> path_segment("a/../b", "task_id")
    'a%2F..%2Fb'
    >>> path_segment("..", "task_id")
    Traceback (most recent call last):
      ...
    handinger_stream.errors.InvalidRequestError: task_id must not be '.' or '..'; got '..'
    """
    segment = quote(checked_id(value, name), safe="")
    if segment in (".", ".."):
        raise InvalidRequestError(f"{name} must not be '.' or '..'; got {value!r}")
    return segment


def file_path(path: str) -> str:
    """A file's path in a workspace as URL path segments, each quoted; no ``.`` or ``..``.

    >>> file_path("/reports/q3 final.md")
    'reports/q3%20final.md'
    """
    if not isinstance(path, str) or not path.strip("/"):
        raise InvalidRequestError(f"path must be a non-empty string; got {path!r}")
    segments = path.lstrip("/").split("/")
    if any(segment in (".", "..") for segment in segments):
        raise InvalidRequestError(
            f"path must not hold '.' or '..' segments (it names a file in the worker's "
            f"workspace, and could reach other API paths); got {path!r}"
        )
    return "/".join(quote(segment, safe="") for segment in segments)
