"""The tenants file and API_KEYS: every tenant complete, every mistake one line naming the
tenant and the field (pure logic: files in a temporary folder, no services)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from delineate.config import ConfigError, load_settings
from delineate.config import tenants as tenants_module
from delineate.config.tenants import OPEN_TENANT, TenantsHolder, load_tenants

GOOD = """
[tenants.alice]
keys = ["alice-key-2026-11", "alice-key-2026-12"]   # two, for rotation
rate_limit = 600
max_active_jobs = 200
max_running = 20
max_streams = 100
weight = 2
callback_hosts = ["hooks.alice.example:443"]
webhook_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

[tenants.bob]
keys = ["bob-key-0001"]
"""


def settings_with(path: Path | None = None, **env: str):  # type: ignore[no-untyped-def]
    environ = dict(env)
    if path is not None:
        environ["TENANTS_FILE"] = str(path)
    return load_settings(environ=environ, dotenv_path=None)


def write(tmp_path: Path, text: str, name: str = "tenants.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_tenants_file_gives_each_tenant_its_own_settings_and_the_rest_defaults(tmp_path: Path) -> None:
    tenants = load_tenants(settings_with(write(tmp_path, GOOD), RATE_LIMIT_MAX_REQUESTS="100"))
    alice, bob = tenants.tenant("alice"), tenants.tenant("bob")
    assert (alice.rate_limit, alice.max_active_jobs, alice.max_running, alice.max_streams) == (600, 200, 20, 100)
    assert alice.weight == 2.0 and alice.callback_hosts == ("hooks.alice.example:443",)
    assert (bob.rate_limit, bob.max_running, bob.weight) == (100, None, 1.0)  # the service's own
    assert tenants.owner_for("alice-key-2026-11") == tenants.owner_for("alice-key-2026-12") == "alice"
    assert tenants.owner_for("bob-key-0001") == "bob" and tenants.owner_for("nobody") is None
    assert tenants.keyed and "alice-key-2026-11" not in repr(tenants)


def test_yaml_works_the_same(tmp_path: Path) -> None:
    path = write(tmp_path, "tenants:\n  alice:\n    keys: [alice-key-0001]\n    weight: 3\n", "tenants.yaml")
    assert load_tenants(settings_with(path)).tenant("alice").weight == 3.0


def test_the_file_wins_over_api_keys_and_open_mode_has_one_tenant(tmp_path: Path) -> None:
    both = load_tenants(settings_with(write(tmp_path, GOOD), API_KEYS="carol:carol-key"))
    assert set(both.tenants) == {"alice", "bob"}
    keyed = load_tenants(settings_with(API_KEYS="carol:carol-key,dave:dave-key"))
    assert set(keyed.tenants) == {"carol", "dave"} and keyed.owner_for("dave-key") == "dave"
    open_ = load_tenants(settings_with())
    assert not open_.keyed and set(open_.tenants) == {OPEN_TENANT}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[tenants.alice]\nkeys = ["k1"]\ncolour = "red"\n', "tenant 'alice': unknown field 'colour'"),
        ('[tenants.alice]\nkeys = ["k1"]\nweight = 0\n', "tenant 'alice': field 'weight' must be a number above 0"),
        ('[tenants.alice]\nkeys = ["k1"]\nrate_limit = "many"\n', "tenant 'alice': field 'rate_limit' must be a whole"),
        ('[tenants.alice]\nkeys = ["k1"]\nmax_running = true\n', "tenant 'alice': field 'max_running'"),
        ("[tenants.alice]\nkeys = []\n", "tenant 'alice': field 'keys' must be a list of one or more"),
        ("[tenants.alice]\nweight = 1\n", "tenant 'alice': field 'keys' is missing"),
        ('[tenants.alice]\nkeys = ["k1", "k1"]\n', "tenant 'alice': field 'keys' lists a key twice"),
        (
            '[tenants.alice]\nkeys = ["k1"]\n[tenants.bob]\nkeys = ["k1"]\n',
            "tenant 'bob': field 'keys' repeats a key of tenant 'alice'",
        ),
        ('[tenants.alice]\nkeys = ["k1"]\ncallback_hosts = ["a b"]\n', "tenant 'alice': field 'callback_hosts'"),
        ('[tenants.alice]\nkeys = ["k1"]\nwebhook_secret = "whsec_"\n', "tenant 'alice': field 'webhook_secret'"),
        ("[tenants.alice]\nkeys = [\n", "not valid"),
        ("[other]\nx = 1\n", "must hold one table, tenants"),
        ('[tenants]\n"al:ice" = {keys = ["k1"]}\n', "is not a tenant name"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_tenant_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as caught:
        load_tenants(settings_with(write(tmp_path, text)))
    assert "\n" not in str(caught.value)


def test_a_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_tenants(settings_with(tmp_path / "nowhere.toml"))


@pytest.mark.parametrize(
    ("value", "message"),
    [("alice:k1,bob:k1", "one key to two names"), ("alice:k1,alice:k2", "names 'alice' twice")],
)
def test_api_keys_never_silently_change_an_owner(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_with(API_KEYS=value)


def test_a_changed_file_is_loaded_whole_and_a_broken_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tenants_module, "RELOAD_CHECK_SECONDS", 0.0)
    path = write(tmp_path, GOOD)
    holder = TenantsHolder(settings_with(path))
    seen = []
    holder.on_change.append(seen.append)
    first = holder.current
    assert holder.current is first  # nothing changed: the same value
    path.write_text(GOOD.replace('"alice-key-2026-11", ', ""))  # a key rotated out
    os.utime(path, ns=(1, 1))  # a new stamp whatever the clock's resolution
    rotated = holder.current
    assert rotated is not first and rotated.owner_for("alice-key-2026-11") is None
    assert rotated.owner_for("alice-key-2026-12") == "alice" and seen == [rotated]
    path.write_text("[tenants.alice]\nkeys = [\n")  # broken: the tenants in force stay
    os.utime(path, ns=(2, 2))
    assert holder.current is rotated
