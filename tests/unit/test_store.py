"""The job store's contracts that need no Redis: its Lua files, its key layout, and the
copies of the terminal states that cannot import ``delineate.models``."""

from __future__ import annotations

import configparser
import fnmatch
import hashlib
import re
from pathlib import Path
from typing import get_args

import pytest

from delineate.api import openapi, schemas
from delineate.models import TERMINAL_STATES, JobState
from delineate.store import keys, scripts

ROOT = Path(__file__).resolve().parents[2]
LUA = ROOT / "delineate" / "store" / "lua"
TERMINAL = {state.value for state in TERMINAL_STATES}


def _lua_table(source: str, name: str) -> tuple[str, set[str]]:
    """The line defining the Lua table ``name = {a = true, ...}``, and its keys."""
    match = re.search(rf"^local {name} = \{{(.*)\}}$", source, re.MULTILINE)
    assert match, f"no `local {name} = {{...}}` line"
    entries = [entry.strip() for entry in match.group(1).split(",")]
    assert all(re.fullmatch(r"[a-z]+ = true", entry) for entry in entries), entries
    return match.group(0), {entry.split(" ")[0] for entry in entries}


def test_every_lua_file_is_a_named_script_or_an_included_part() -> None:
    assert sorted(path.stem for path in LUA.glob("*.lua")) == sorted(scripts.NAMES + scripts.INCLUDED)


@pytest.mark.parametrize("name", scripts.NAMES)
def test_script_loads_with_no_marker_left(name: str) -> None:
    raw = (LUA / f"{name}.lua").read_text()
    source = scripts.source(name)
    assert not re.search(r"\$[A-Z]", source)  # (a Lua pattern's anchor, `%d+)$`, is no marker)
    assert keys.PREFIX not in raw, "key prefixes are written $PREFIX: (only store/keys.py spells them)"
    for part in scripts.INCLUDED:
        raw = raw.replace(f"{scripts.INCLUDE}{part}\n", (LUA / f"{part}.lua").read_text() + "\n")
    assert source == raw.replace("$PREFIX:", keys.PREFIX)
    header = raw.split("\n\n", 1)[0]
    assert header.startswith("-- ") and "-- KEYS:" in header and "-- ARGV:" in header and "-- Returns" in header


def test_a_stray_marker_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "lua").mkdir()
    (tmp_path / "lua" / "odd.lua").write_text("return $MARGIN\n")
    monkeypatch.setattr(scripts, "files", lambda package: tmp_path)
    with pytest.raises(ValueError, match=r"odd\.lua"):
        scripts.source("odd")


def test_keys_built_in_lua_are_the_store_keys() -> None:
    """Every key a script builds itself starts like one that keys.py builds."""
    builders = {
        keys.job_key(""),
        keys.events_channel(""),
        keys.active_key(""),
        keys.history_key("o", "s").removesuffix("o:s"),
        keys.count_key("o", "s").removesuffix("o:s"),
        keys.LIVE_KEY,
        keys.EXPIRY_KEY,
        keys.WEBHOOKS_KEY,
        keys.DISPATCH_PREFIX,
        keys.bundle_refs_key(""),  # a shared bundle's users (reuse.lua)
        f"{keys.METRICS_PREFIX}jobs",  # the count of terminal jobs by state (update.lua)
    }
    built = {key for name in scripts.NAMES for key in re.findall(r"'(delineate:[^']*)'", scripts.source(name))}
    assert built and built <= builders, built - builders


def test_update_script_terminal_table_is_the_python_constant() -> None:
    line, states = _lua_table(scripts.source("update"), "TERMINAL")
    assert states == TERMINAL
    for name in scripts.NAMES:
        source = scripts.source(name).replace(line, "")
        for state in TERMINAL:
            assert f"'{state}'" not in source and f'"{state}"' not in source, (name, state)
            assert not re.search(rf"\b{state}\b", source.split("\n\n", 1)[1]), (name, state)


def test_dashboard_terminal_set_is_the_python_constant() -> None:
    script = (ROOT / "delineate" / "api" / "static" / "dashboard" / "dashboard.js").read_text()
    match = re.search(r"const TERMINAL = new Set\(\[([^\]]*)\]\);", script)
    assert match, "no `const TERMINAL = new Set([...]);` in dashboard.js"
    assert set(re.findall(r'"([a-z]+)"', match.group(1))) == TERMINAL


def test_terminal_states_keep_their_order() -> None:
    """The order shows in the OpenAPI document (schemathesis) and in metric labels."""
    assert [state.value for state in TERMINAL_STATES] == ["completed", "failed", "cancelled"]
    assert all(state.terminal for state in TERMINAL_STATES)
    assert not JobState.QUEUED.terminal and not JobState.PROCESSING.terminal
    assert openapi.SSE_EVENT["properties"]["event"]["enum"] == [
        "connected",
        "progress",
        "completed",
        "failed",
        "cancelled",
    ]
    assert get_args(schemas.JobStatusName) == tuple(state.value for state in JobState)


def test_key_layout() -> None:
    """The contract of ARCHITECTURE.md's key table: data written by one release is read by the next."""
    digest = hashlib.sha256(b"k").hexdigest()
    assert keys.PREFIX == "delineate:"
    assert keys.job_key("j") == "delineate:job:j"
    assert keys.lease_key("j") == "delineate:lease:j"
    assert keys.events_channel("j") == "delineate:events:j"
    assert keys.active_key("o") == "delineate:active:o"
    assert keys.idempotency_key("o", "k") == f"delineate:idem:o:{digest}"
    assert keys.idempotency_key("", "k") == f"delineate:idem:-:{digest}"
    assert keys.history_key("o", "queued") == "delineate:history:o:queued"
    assert keys.history_key("", "last") == "delineate:history:-:last"
    assert keys.count_key("o", "failed") == "delineate:count:o:failed"
    assert keys.count_key("", "failed") == "delineate:count:-:failed"
    assert keys.LIVE_KEY == "delineate:sweep:live"
    assert keys.EXPIRY_KEY == "delineate:sweep:expiry"
    assert keys.WEBHOOKS_KEY == "delineate:sweep:webhooks"
    assert keys.SUSPECTS_KEY == "delineate:sweep:suspects"
    assert keys.SWEEP_LOCK_KEY == "delineate:sweep:lock"
    assert keys.RATE_LIMIT_PREFIX == "delineate:ratelimit"
    assert keys.METRICS_PREFIX == "delineate:metrics:"
    assert keys.NO_IDEMPOTENCY_KEY == "delineate:idem:-:none"
    assert keys.NO_QUEUE_KEY == "delineate:no-queue"


def test_the_package_ships_the_lua_files() -> None:
    """A non-editable install (the image) has only what package_data lists."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = config["options.package_data"]["delineate"].split()
    for path in LUA.glob("*.lua"):
        relative = path.relative_to(ROOT / "delineate").as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), (relative, patterns)


def test_update_script_counts_terminal_jobs_in_the_metrics_hash() -> None:
    """The count by state is written with the terminal write (not by a hook after it), into
    the hash /metrics reads."""
    from delineate.telemetry.metrics import JOBS_KEY

    source = scripts.source("update")
    assert f"redis.call('HINCRBY', '{JOBS_KEY}', new_status, 1)" in source
