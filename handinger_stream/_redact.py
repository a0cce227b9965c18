"""A URL fit to show: in a repr, a log line, an error, or a file a user may share.

Below every part, so that each part that shows a URL (the relay's Redis
store, the cassette recorder) hides the same things the same way: the whole
``user:password@`` part, since a user name alone may be the secret (a token
sent as the user name). It becomes ``***@``, so a reader still sees that
credentials were given.

>>> redact_url("redis://:hunter2@127.0.0.1:6379/0")
'redis://***@127.0.0.1:6379/0'
>>> redact_url("https://api.example.com/v1")
'https://api.example.com/v1'
"""

from __future__ import annotations

__all__ = ["redact_url"]


def redact_url(url: str) -> str:
    """``url`` with its credentials (``user:password@``, or ``user@``) replaced by ``***@``.

    Plain string work, so that no URL, however malformed, makes it raise: the
    authority ends at the first ``/``, ``?`` or ``#`` after ``scheme://``, and
    the host is what follows its last ``@``.

    >>> redact_url("http://sk-123@[::1]:8787/api?x=1")
    'http://***@[::1]:8787/api?x=1'
    >>> redact_url("redis://user:p@ss@host/0")
    'redis://***@host/0'
    >>> redact_url("notaurl")
    'notaurl'
    """
    scheme, sep, rest = url.partition("//")
    if not sep:
        return url
    end = len(rest)
    for delimiter in "/?#":
        found = rest.find(delimiter)
        if 0 <= found < end:
            end = found
    _, at, host = rest[:end].rpartition("@")
    if not at:
        return url
    return f"{scheme}//***@{host}{rest[end:]}"
