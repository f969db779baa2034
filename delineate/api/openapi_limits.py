"""The numbers the OpenAPI document's descriptions name, filled in from the app's settings.

Descriptions are written once (:data:`delineate.api.openapi.OPERATIONS`) with ``{name}``
placeholders; each app's document carries its own MAX_FILE_IDS, body limits and the
estimate's budget and cost, so the spec never states a limit the server does not apply.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from delineate.api.validation import FILE_ID_MAX, FILE_ID_MIN

FILE_IDS_TEXT = (
    f"`file_ids`: 1-{{max_file_ids}} (MAX_FILE_IDS) JSON integers from {FILE_ID_MIN} to {FILE_ID_MAX} (no strings, "
    "floats, exponents or booleans), in a body of at most {max_initiate_body_bytes} bytes (MAX_INITIATE_BODY_BYTES); "
    "duplicates are dropped (the limit counts ids as sent)."
)
"""The body rule of initiate and estimate."""

INITIATE_TEXT = FILE_IDS_TEXT + (
    " `totalFileIds` counts unique ids. The job is prepared in the background: poll the status link in `Location`."
)
"""The initiate's description."""

ESTIMATE_TEXT = FILE_IDS_TEXT + (
    " The ids are checked (LIST pages where they are dense, else HEADs side by side) for at most "
    "{estimate_budget_seconds} s; ids not checked by then are listed in `uncheckedFileIds` (503 when none was). "
    "Counts as one request per {estimate_ids_per_request} ids against the rate limit."
)
"""The estimate's description."""


def limits(app: Flask) -> dict[str, str]:
    """``{name}`` → its value for ``app``."""
    from delineate.api.blueprints import downloads  # (the estimate's constants live beside its view)

    settings = app.extensions["delineate"].settings
    return {
        "max_file_ids": str(settings.max_file_ids),
        "max_body_bytes": str(settings.max_body_bytes),
        "max_initiate_body_bytes": str(settings.max_initiate_body_bytes),
        "estimate_budget_seconds": f"{downloads.ESTIMATE_BUDGET_SECONDS:g}",
        "estimate_ids_per_request": str(downloads.ESTIMATE_IDS_PER_REQUEST),
    }


def with_limits(paths: dict[str, Any], app: Flask) -> dict[str, Any]:
    """``paths`` with every ``description`` filled (a new dict; the rest is shared)."""
    values = limits(app)

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: _filled(v, values) if k == "description" and isinstance(v, str) else fill(v) for k, v in node.items()
            }
        if isinstance(node, list):
            return [fill(item) for item in node]
        return node

    return fill(paths)  # type: ignore[no-any-return]


def _filled(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text
