"""The job store's Lua scripts, read from ``delineate/store/lua/<name>.lua``.

Each file's header says what the script does, its KEYS and ARGV, and what it returns.
A script that builds keys itself (from the stored owner or job id) writes their prefix
as ``$PREFIX:``. Replacing that marker with :data:`~delineate.store.keys.PREFIX` is the
only substitution made: everything else a script needs arrives in KEYS or ARGV. The
prefix stays a marker rather than an ARGV because it would shift the field pairs of the
update and create scripts and add its bytes to every progress write.
"""

from __future__ import annotations

import re
from importlib.resources import files

from delineate.store.keys import PREFIX

MARKER = "$PREFIX:"

NAMES = (
    "update",
    "create",
    "callback",
    "claim_webhook",
    "lease",
    "release",
    "revoke",
    "revoked_webhook",
    "grant",
    "release_bundles",
)
"""Every script in ``lua/``."""


INCLUDE = "-- $INCLUDE "
"""A line ``-- $INCLUDE dispatch`` is replaced by ``lua/dispatch.lua`` (its functions)."""

INCLUDED = ("dispatch", "reuse")
"""Files of shared functions, included by the scripts that use them (never run alone)."""


def _read(name: str) -> str:
    return (files("delineate.store") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def source(name: str) -> str:
    """The Lua source of ``lua/{name}.lua`` with ``$PREFIX:`` replaced.

    :raise ValueError: another ``$`` marker is left in the file.
    """
    text = _read(name)
    for part in INCLUDED:  # shared functions, pasted where a script asks for them
        if f"{INCLUDE}{part}\n" in text:
            text = text.replace(f"{INCLUDE}{part}\n", _read(part) + "\n")
    text = text.replace(MARKER, PREFIX)
    if re.search(r"\$[A-Z]", text):  # (a Lua pattern's anchor, `%d+)$'`, is no marker)
        raise ValueError(f"{name}.lua: a '$' marker other than {MARKER} is left")
    return text
