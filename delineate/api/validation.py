"""Request bodies: parsed strictly, every problem reported with its JSON path.

The pydantic models here are the single source of truth for what a body may hold.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, TypeVar

import orjson
from flask import request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from werkzeug.exceptions import RequestEntityTooLarge, UnsupportedMediaType
from werkzeug.http import parse_options_header

from delineate.config import Settings
from delineate.errors import InvalidJobId, InvalidRequest

FILE_ID_MIN = 10_000
FILE_ID_MAX = 100_000_000
MAX_FILE_IDS = 10_000
"""Ids one initiate or estimate may send (as sent, duplicates included): the default of
the MAX_FILE_IDS setting; :func:`file_ids_body` gives the model of another limit."""

MAX_JSON_DEPTH = 16
"""Nesting levels a body may have; the models need two. orjson's own limit is 1024."""

FileId = Annotated[int, Field(ge=FILE_ID_MIN, le=FILE_ID_MAX, strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FileIdsBody(_Strict):
    """Body of initiate and estimate."""

    file_ids: list[FileId] = Field(min_length=1, max_length=MAX_FILE_IDS)
    callback_url: str | None = Field(default=None, max_length=2048)

    def unique_ids(self) -> list[int]:
        """The ids without duplicates, in the order first given."""
        return list(dict.fromkeys(self.file_ids))


@functools.cache
def file_ids_body(max_ids: int) -> type[FileIdsBody]:
    """:class:`FileIdsBody` taking at most ``max_ids`` ids (the MAX_FILE_IDS setting): one
    class per limit, made once, under the same name, so the OpenAPI document shows the limit."""
    if max_ids == MAX_FILE_IDS:
        return FileIdsBody
    return create_model(
        FileIdsBody.__name__,
        __base__=FileIdsBody,
        __module__=__name__,
        file_ids=(list[FileId], Field(min_length=1, max_length=max_ids)),
    )


class FileIdBody(_Strict):
    """Body of check and start."""

    file_id: FileId


# Paths under /v1/download/ that are routes, never job ids.
ROUTE_NAMES = frozenset({"check", "initiate", "estimate", "start", "status", "stream"})

Model = TypeVar("Model", bound=BaseModel)

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _path(loc: tuple[int | str, ...]) -> str:
    path = "$"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _describe(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind in {"int_type", "int_parsing"}:
        return "must be an integer (not a string, float or boolean)"
    if kind in {"greater_than_equal", "less_than_equal"}:
        return f"must be between {FILE_ID_MIN} and {FILE_ID_MAX}"
    if kind == "too_short":
        return "must contain at least 1 item"
    if kind == "too_long":
        ctx = error.get("ctx", {})
        got = f", not {ctx['actual_length']}" if ctx.get("actual_length") is not None else ""
        return f"must contain at most {ctx.get('max_length', MAX_FILE_IDS)} items (MAX_FILE_IDS){got}"
    if kind == "missing":
        return "is required"
    return str(error["msg"])


def too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``raw`` nests arrays and objects deeper than ``limit`` (strings skipped).

    Two C-speed counts settle every ordinary body (an initiate body has two brackets);
    only a body with more brackets than ``limit`` is walked byte by byte, once: linear
    in its size, so even 64 KiB of ``[`` costs a few milliseconds, never a recursion.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # closing quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


def body_refusal(content_type: str | None, content_encoding: str | None) -> UnsupportedMediaType | None:
    """Why a body cannot be taken as declared (the error to answer with), or None.

    One rule for both entrances: :func:`parse_body` raises it, and the fast lane leaves such
    a request to Flask's view, which raises it.
    """
    mimetype, params = parse_options_header(content_type or "")
    if not (mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))):
        return UnsupportedMediaType("Send the body as JSON with Content-Type: application/json.")
    charset = params.get("charset")
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        return UnsupportedMediaType("JSON bodies must be UTF-8 (charset=utf-8, or no charset).")
    if content_encoding is not None and content_encoding.strip().lower() not in ("", "identity"):
        return UnsupportedMediaType("Send the body uncompressed (no Content-Encoding).")
    return None


def _check_json_headers() -> None:
    """:raise UnsupportedMediaType: not JSON, not UTF-8, or compressed (never decoded here)."""
    refusal = body_refusal(request.headers.get("Content-Type"), request.headers.get("Content-Encoding"))
    if refusal is not None:
        raise refusal


def parse_file_ids(settings: Settings) -> FileIdsBody:
    """The body of initiate and estimate: up to MAX_FILE_IDS ids, in a body of up to
    MAX_INITIATE_BODY_BYTES (the fast lane applies the same two limits).

    :raise 400, 413, 415: as :func:`parse_body`.
    """
    return parse_body(file_ids_body(settings.max_file_ids), settings.max_initiate_body_bytes)


def parse_body(model: type[Model], max_bytes: int | None = None) -> Model:
    """Parse the request's JSON body into ``model``; ``max_bytes`` replaces MAX_BODY_BYTES
    for this request.

    :raise 415: the body is not declared as UTF-8 JSON, or it is compressed.
    :raise 400: malformed JSON, nested deeper than MAX_JSON_DEPTH, or fields that break
        the model (all listed in details).
    :raise 413: the body is larger than the request's limit (raised by werkzeug):
        ``max_bytes`` when given (MAX_INITIATE_BODY_BYTES on initiate and estimate), else MAX_BODY_BYTES.
    """
    _check_json_headers()
    if max_bytes is not None:
        request.max_content_length = max_bytes  # before the stream is made: werkzeug checks it there
    raw = request.get_data(cache=False)
    declared = request.content_length
    if declared is not None and len(raw) < declared:
        # gunicorn ends the stream where the client stopped sending: a cut body is never a job.
        raise InvalidRequest(f"The body ended after {len(raw)} of the {declared} bytes its Content-Length declared.")
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # A chunked body is cut at the limit without an error; look one byte further.
        if request.environ["wsgi.input"].read(1):
            raise RequestEntityTooLarge()
    return parse_json(raw, model)


def parse_json(raw: bytes, model: type[Model]) -> Model:
    """Parse a JSON body already read into ``model`` (:func:`parse_body` without the request).

    :raise 400: malformed JSON, nested deeper than MAX_JSON_DEPTH, or fields that break the model.
    """
    if too_deep(raw):
        raise InvalidRequest(
            f"The body nests arrays or objects deeper than {MAX_JSON_DEPTH} levels.",
            details=[{"path": "$", "message": f"at most {MAX_JSON_DEPTH} levels of nesting"}],
        )
    try:
        # orjson: strict JSON (no NaN/Infinity), nesting bounded (1024 levels, so no
        # recursion error), numbers bounded by their type: integers past 64 bits read as
        # floats, which the models refuse, and a float past the double range is an error.
        data = orjson.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object.", details=[{"path": "$", "message": "must be an object"}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [{"path": _path(e["loc"]), "message": _describe(e)} for e in exc.errors()]
        summary = "; ".join(f"{d['path']} {d['message']}" for d in details[:5])
        raise InvalidRequest(f"Invalid request body: {summary}", details=details) from None


def is_job_id(value: str) -> bool:
    return _UUID.fullmatch(value) is not None


def parse_job_id(value: str) -> str:
    """The canonical (lower-case) job id from a path segment.

    :raise InvalidJobId: the value is not a UUID in its usual 8-4-4-4-12 form.
    """
    if not _UUID.fullmatch(value):
        raise InvalidJobId(f"{value[:64]!r} is not a job id (expected a UUID).")
    return value.lower()


# -- query parameters ------------------------------------------------------------------

_WHOLE_NUMBER = re.compile(r"[0-9]{1,6}")
"""ASCII digits only: ``str.isdigit`` also accepts ``²`` and other digits ``int`` refuses."""


def bad_query(parameter: str, message: str) -> InvalidRequest:
    """The 400 for a query parameter, naming it."""
    return InvalidRequest(
        f"Invalid query parameter {parameter}: {message}",
        details=[{"path": f"query {parameter}", "message": message}],
    )


def query_number(name: str, default: int, low: int, high: int) -> int:
    """The whole-number query parameter ``name`` (``default`` when absent).

    :raise InvalidRequest: not ASCII digits, or outside ``low``-``high``.
    """
    raw = request.args.get(name)
    if raw is None:
        return default
    if not _WHOLE_NUMBER.fullmatch(raw) or not low <= int(raw) <= high:
        raise bad_query(name, f"must be a whole number from {low} to {high}")
    return int(raw)


def refuse_unknown_query(*known: str) -> None:
    """:raise InvalidRequest: the query string names a parameter not in ``known``."""
    unknown = set(request.args) - set(known)
    if unknown:
        names = ", ".join(known) if known else "none"
        raise bad_query(sorted(unknown)[0][:64], f"unknown parameter (known: {names})")
