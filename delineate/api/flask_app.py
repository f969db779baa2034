"""The Flask and Response classes of the API, with two costs of every request removed.

Both matter because the hot routes (status, initiate) are only a few times the cost of
a bare hello-world, and the contract puts a dozen headers on every response.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app
from werkzeug.datastructures import Headers

from delineate.services import Services


class EdgeResponse(Response):
    """A response that carries the edge's headers apart until it is sent.

    Werkzeug copies a response's headers when it sends them and checks every value
    again for line breaks (a regex per header). The edge's headers are constants
    checked once, numbers, or a request id that matched its pattern, so the edge puts
    them in :attr:`edge_headers` and they join the copy without the second check.
    """

    edge_headers: list[tuple[str, str]] | None = None

    def get_wsgi_headers(self, environ: Any) -> Headers:
        headers = super().get_wsgi_headers(environ)
        if self.edge_headers:
            target = getattr(headers, "_list", None)
            if isinstance(target, list):
                target.extend(self.edge_headers)
            else:
                headers.extend(self.edge_headers)
        return headers


class DelineateFlask(Flask):
    """Flask that remembers which of its views and hooks are plain functions.

    Flask asks ``inspect.iscoroutinefunction`` about every view and hook on every
    request; the answer for a given function never changes, so it is asked once.
    """

    response_class = EdgeResponse

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plain: dict[Any, bool] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        plain = self._plain.get(func)
        if plain is None:
            plain = super().ensure_sync(func) is func
            if len(self._plain) < 10_000:  # views and hooks: a fixed few
                self._plain[func] = plain
        return func if plain else super().ensure_sync(func)


def services() -> Services:
    """The current app's services (inside a request or an app context)."""
    return current_app.extensions["delineate"]  # type: ignore[no-any-return]
