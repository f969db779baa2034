"""Response headers the app built from parts it had already checked.

gunicorn checks every response header's name and value with two regular expressions
before it writes them (``Response.process_headers``): about 0.8 µs a header, 12 µs for
the 14 headers of a status read, a twentieth of the request. The fast lane's headers are
constants checked when the app started (:func:`check_constant`), numbers, and ids that
matched their patterns, so the lane hands them over as :class:`CheckedHeaders` and
:class:`delineate.api.gunicorn_worker.CheckedResponse` takes them as they are. Any other
list still goes through gunicorn's own checks; without FAST_PATHS no lane makes one.
"""

from __future__ import annotations

from gunicorn.http.message import TOKEN_RE
from gunicorn.http.wsgi import HEADER_VALUE_RE


class CheckedHeaders(list[tuple[str, str]]):
    """A response's headers, every name a token and every value free of control
    characters and of surrounding blanks; no hop-by-hop header; ``content_length`` the
    value of its Content-Length header."""

    __slots__ = ("content_length",)

    def __init__(self, headers: list[tuple[str, str]], content_length: int) -> None:
        super().__init__(headers)
        self.content_length = content_length


def check_constant(name: str, value: str) -> tuple[str, str]:
    """A header the app sends unchanged on many responses, checked once as gunicorn would.

    :raise ValueError: the name is not a token, or the value has a control character or
        blanks around it (a setting that would otherwise fail every response).
    """
    if not TOKEN_RE.fullmatch(name) or not HEADER_VALUE_RE.fullmatch(value) or value != value.strip(" \t"):
        raise ValueError(f"response header {name!r}: not a valid header")
    return name, value
