import pytest

from delineate.config import ConfigError, load_settings


def test_defaults_follow_design() -> None:
    s = load_settings(environ={}, dotenv_path=None)
    assert s.port == 3000
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.celery_broker_url == s.redis_url == s.celery_result_backend
    assert s.s3_public_endpoint == s.s3_endpoint == "http://127.0.0.1:8333"
    assert (s.download_delay_min_ms, s.download_delay_max_ms) == (10_000, 120_000)
    assert s.api_keys == {}
    assert s.cors_origins == ("*",)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PORT": "abc"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"S3_ENDPOINT": "not a url"}, "S3_ENDPOINT"),
        ({"S3_ENDPOINT": "http://host:port"}, "S3_ENDPOINT"),
        ({"REDIS_URL": "http://localhost"}, "REDIS_URL"),
        ({"DOWNLOAD_DELAY_ENABLED": "maybe"}, "DOWNLOAD_DELAY_ENABLED"),
        ({"DOWNLOAD_DELAY_MIN_MS": "5", "DOWNLOAD_DELAY_MAX_MS": "1"}, "DOWNLOAD_DELAY_MIN_MS"),
        ({"API_KEYS": "nokey"}, "API_KEYS"),
        ({"MAX_FILE_IDS": "0"}, "MAX_FILE_IDS"),
        ({"MAX_FILE_IDS": "100001"}, "MAX_FILE_IDS"),
        ({"MAX_INITIATE_BODY_BYTES": "63"}, "MAX_INITIATE_BODY_BYTES"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_settings(environ=env, dotenv_path=None)


def test_layers_environment_then_overrides(tmp_path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("PORT=4000\nS3_REGION=eu-west-1\n")
    s = load_settings(environ={"PORT": "5000"}, overrides={"s3_region": "x"}, dotenv_path=str(dotenv))
    assert s.port == 5000  # the environment beats .env
    assert s.s3_region == "x"  # overrides beat both
    s = load_settings(environ={}, dotenv_path=str(dotenv))
    assert (s.port, s.s3_region) == (4000, "eu-west-1")


def test_api_keys_parse_to_owner_by_key() -> None:
    s = load_settings(environ={"API_KEYS": "alice:k1, bob:k2"}, dotenv_path=None)
    assert s.api_keys == {"k1": "alice", "k2": "bob"}


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(environ={}, overrides={"NOPE": 1}, dotenv_path=None)


def test_sentinel_settings_parse_and_the_password_is_redacted() -> None:
    s = load_settings(
        environ={"REDIS_SENTINELS": "s1:26379, [::1]:26380,10.0.0.3:26381", "REDIS_SENTINEL_PASSWORD": "sentinel-pw"},
        dotenv_path=None,
    )
    assert s.redis_sentinels == (("s1", 26379), ("::1", 26380), ("10.0.0.3", 26381))
    assert s.redis_sentinel_master == "delineate"
    assert "sentinel-pw" not in repr(s)
    assert "sentinel-pw" in s.secret_values()
    assert load_settings(environ={}, dotenv_path=None).redis_sentinels == ()


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"REDIS_SENTINELS": "s1"}, "REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "s1:26379,s2:port"}, "REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "s1:0"}, "REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": ":26379"}, "REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": ","}, "REDIS_SENTINELS"),
        ({"REDIS_SENTINEL_MASTER": ""}, "REDIS_SENTINEL_MASTER"),
        ({"REDIS_SENTINEL_MASTER": "my master"}, "REDIS_SENTINEL_MASTER"),
        ({"REDIS_SENTINELS": "s1:26379", "REDIS_URL": "rediss://r:6379/0"}, "REDIS_URL"),
    ],
)
def test_bad_sentinel_values_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name) as info:
        load_settings(environ=env, dotenv_path=None)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("raw", ["https://a.example,https://b.example\x0bX-Injected:1", "https://a.example https://b"])
def test_a_cors_origin_that_cannot_be_a_header_is_refused_at_start_up(raw: str) -> None:
    """The fast lane echoes a listed origin unchecked (CheckedHeaders)."""
    with pytest.raises(ConfigError, match="CORS_ORIGINS") as info:
        load_settings(environ={"CORS_ORIGINS": raw}, dotenv_path=None)
    assert "\n" not in str(info.value)


def test_celery_goes_through_sentinel_only_when_configured() -> None:
    from delineate.broker.app import celery_config

    plain = celery_config(load_settings(environ={"REDIS_URL": "redis://:pw@r:6379/2"}, dotenv_path=None))
    assert plain["broker_url"] == plain["result_backend"] == "redis://:pw@r:6379/2"
    assert "master_name" not in plain["broker_transport_options"]
    env = {"REDIS_URL": "redis://:pw@ignored:1/2", "REDIS_SENTINELS": "s1:26379,s2:26380", "REDIS_SENTINEL_MASTER": "m"}
    ha = celery_config(load_settings(environ=env, dotenv_path=None))
    assert ha["broker_url"] == ha["result_backend"] == "sentinel://:pw@s1:26379/2;sentinel://:pw@s2:26380/2"
    assert ha["broker_transport_options"]["master_name"] == "m"
    assert ha["broker_transport_options"]["visibility_timeout"] == 180
    assert ha["result_backend_transport_options"]["master_name"] == "m"


def test_replica_acknowledgement_only_behind_sentinel() -> None:
    from delineate.services import build_services

    plain = load_settings(environ={}, dotenv_path=None)
    assert plain.redis_replica_ack_timeout_ms == 500
    assert build_services(plain).replica_ack is None  # no Sentinel: no WAIT at all
    ha = load_settings(
        environ={"REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_REPLICA_ACK_TIMEOUT_MS": "250"}, dotenv_path=None
    )
    ack = build_services(ha).replica_ack
    assert ack is not None and ack.timeout_ms == 250
    with pytest.raises(ConfigError, match="REDIS_REPLICA_ACK_TIMEOUT_MS"):
        load_settings(environ={"REDIS_REPLICA_ACK_TIMEOUT_MS": "0"}, dotenv_path=None)


def test_flower_reads_the_sentinel_broker() -> None:
    from celery import Celery
    from flower.utils.broker import Broker, RedisSentinel

    from delineate.broker.app import celery_config

    env = {"REDIS_SENTINELS": "127.0.0.1:26379,127.0.0.1:26380", "REDIS_SENTINEL_MASTER": "m"}
    capp = Celery(set_as_current=False)
    capp.config_from_object(celery_config(load_settings(environ=env, dotenv_path=None)))
    with capp.connection() as conn:  # as Flower's broker page builds it (flower/app.py)
        uri = conn.as_uri(include_password=True)
    broker = Broker(uri, broker_options=capp.conf.broker_transport_options)
    assert isinstance(broker, RedisSentinel) and broker.master_name == "m"


def test_large_export_limits_default_to_design_and_parse() -> None:
    s = load_settings(environ={}, dotenv_path=None)
    assert (s.max_file_ids, s.max_initiate_body_bytes, s.max_body_bytes) == (10_000, 262_144, 65_536)
    s = load_settings(environ={"MAX_FILE_IDS": " 500 ", "MAX_INITIATE_BODY_BYTES": "1048576"}, dotenv_path=None)
    assert (s.max_file_ids, s.max_initiate_body_bytes) == (500, 1_048_576)
