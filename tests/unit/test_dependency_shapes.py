"""The private APIs and internal layouts of our dependencies that our code relies on, pinned.

Each test names the module of ours that depends on a shape, and fails with the library,
its installed version and what changed (``tests/support/shapes.py``), so that after an
upgrade the failure says which of our fast paths or readers the new version breaks. Where
only a real service proves the shape (kombu's queue layout after a real publish and take,
redis-py's connection socket on a real server), the test is in
``tests/integration/test_dependency_layouts.py``. ``setup.cfg`` pins every library here to
the range these tests have passed on (:func:`test_setup_cfg_pins_what_these_tests_cover`).
"""

from __future__ import annotations

import ast
import configparser
import inspect
import socket
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from tests.support.shapes import changed, parameters

ROOT = Path(__file__).resolve().parents[2]

# -- kombu: delineate/broker/transport.py (one client per channel), queues.py (the layout) ----


def test_kombu_channel_builds_its_clients_in_create_client() -> None:
    from kombu.transport import redis as kombu_redis

    user = "delineate/broker/transport.py overrides it to share one client per channel"
    channel = kombu_redis.Channel
    assert "_create_client" in vars(channel), changed(
        "kombu", "Channel._create_client no longer exists", user, switch=True
    )
    assert parameters(channel._create_client) == ["self", "asynchronous"], changed(
        "kombu", f"Channel._create_client{parameters(channel._create_client)} takes other arguments", user, switch=True
    )
    assert isinstance(vars(channel).get("pool"), property), changed(
        "kombu", "Channel.pool is no longer a property", user, switch=True
    )

    class Probe:  # conn_or_acquire must build its client through _create_client
        def _create_client(self, asynchronous: bool = False) -> str:
            return "built by _create_client"

    with channel.conn_or_acquire(Probe()) as client:
        assert client == "built by _create_client", changed(
            "kombu", "Channel.conn_or_acquire no longer asks _create_client for its client", user, switch=True
        )
    relations = {
        "SentinelChannel is a Channel": issubclass(kombu_redis.SentinelChannel, channel),
        "Transport.Channel is Channel": kombu_redis.Transport.Channel is channel,
        "SentinelTransport.Channel is SentinelChannel": kombu_redis.SentinelTransport.Channel
        is kombu_redis.SentinelChannel,
    }
    assert all(relations.values()), changed("kombu", f"the transport classes changed: {relations}", user, switch=True)


def test_kombu_transport_aliases_name_kombus_own_classes() -> None:
    """``use_kombus_own`` (FAST_PATHS=false) must put back kombu's classes under its names."""
    from kombu.transport import redis as kombu_redis
    from kombu.utils.imports import symbol_by_name

    from delineate.broker import transport

    own = {name: symbol_by_name(path) for name, path in transport._KOMBUS_OWN.items()}
    expected = {
        "redis": kombu_redis.Transport,
        "rediss": kombu_redis.Transport,
        "sentinel": kombu_redis.SentinelTransport,
    }
    assert own == expected, changed(
        "kombu", f"TRANSPORT_ALIASES names other classes: {own}", "delineate/broker/transport.py swaps them"
    )


def test_kombu_redis_queue_layout_has_the_names_the_sweeper_reads() -> None:
    from kombu.transport import redis as kombu_redis

    from delineate.broker.queues import PRIORITY_SEP, PRIORITY_STEPS, UNACKED_INDEX, UNACKED_LIST

    user = "delineate/broker/queues.py reads it for the sweeper (delineate/jobs/sweeper.py)"
    channel = kombu_redis.Channel
    names = {"unacked_key": channel.unacked_key, "unacked_index_key": channel.unacked_index_key}
    assert names == {"unacked_key": UNACKED_LIST, "unacked_index_key": UNACKED_INDEX}, changed(
        "kombu", f"the Redis transport keeps unacknowledged messages under other keys: {names}", user
    )
    assert (channel.sep, list(channel.priority_steps)) == (PRIORITY_SEP, [0, *PRIORITY_STEPS]), changed(
        "kombu", f"priority lists are named otherwise: sep {channel.sep!r}, steps {channel.priority_steps}", user
    )
    assert channel.global_keyprefix == "", changed("kombu", "keys now carry a prefix by default", user)


# -- Celery: delineate/broker/queue.py writes Celery's message itself ----------------------------


def test_celery_names_origin_and_reply_to_as_task_message_does() -> None:
    """``TaskQueue`` fills a message's origin with ``anon_nodename()`` and its reply_to with
    ``Celery.thread_oid``, as ``send_task`` does (the rest of the message:
    ``tests/unit/test_task_queue.py``)."""
    from celery import Celery
    from celery.utils.nodenames import anon_nodename

    app = Celery("probe", broker="memory://")
    app.conf.update(task_serializer="json", accept_content=["json"])
    app.send_task("delineate.probe", args=["x"], task_id="probe-1", ignore_result=True)
    with app.connection_for_read() as connection:
        message = connection.default_channel._get("celery")
    user = "delineate/broker/queue.py (TaskQueue) writes it into the messages of initiate's script"
    assert message["headers"]["origin"] == anon_nodename(), changed("celery", "origin is not anon_nodename()", user)
    assert message["properties"]["reply_to"] == str(app.thread_oid), changed(
        "celery", "reply_to is not Celery.thread_oid", user
    )


# -- redis-py and hiredis: delineate/redis_io/ (the lanes) -----------------------------------------


def test_redis_parser_maps_error_replies_to_redis_py_errors() -> None:
    from redis.exceptions import BusyLoadingError, MasterDownError, NoScriptError, ReadOnlyError, ResponseError

    user = "delineate/redis_io/pipelined.py raises its errors from hiredis's replies"
    try:
        from redis._parsers.base import BaseParser
    except ImportError as exc:  # redis-py moved its parsers once already (4.x to 5.0)
        pytest.fail(changed("redis", f"redis._parsers.base.BaseParser cannot be imported ({exc})", user, switch=True))
    replies = {
        "NOSCRIPT No matching script": NoScriptError,
        "READONLY You can't write against a read only replica.": ReadOnlyError,
        "MASTERDOWN Link with MASTER is down": MasterDownError,
        "LOADING Redis is loading the dataset in memory": BusyLoadingError,
        "ERR unknown command": ResponseError,
    }
    for reply, expected in replies.items():
        error = BaseParser.parse_error(reply)
        what = f"BaseParser.parse_error({reply!r}) gives {type(error).__name__}, not {expected.__name__}"
        assert type(error) is expected, changed("redis", what, user, switch=True)


def test_hiredis_reads_replies_as_the_pipelined_lane_asks() -> None:
    import hiredis
    import redis
    from redis.exceptions import NoScriptError

    from delineate.redis_io.pipelined import _reply_reader

    user = "delineate/redis_io/pipelined.py packs and parses a batch with hiredis on redis-py's socket"
    connection = redis.Connection(decode_responses=True)
    packed = b"".join(connection.pack_command("SET", "k", 1))
    assert hiredis.pack_command(("SET", "k", 1)) == packed, changed(
        "hiredis", "pack_command differs from redis-py", user, switch=True
    )
    reader = _reply_reader(connection)
    reader.feed(b"+OK\r\n-NOSCRIPT No matching script\r\n$5\r\nva")
    assert reader.gets() == "OK", changed("hiredis", "Reader(encoding=) no longer decodes", user, switch=True)
    assert isinstance(reader.gets(), NoScriptError), changed(
        "hiredis", "Reader(replyError=) is not called", user, switch=True
    )
    assert reader.gets() is False, changed("hiredis", "a partial reply no longer reads as False", user, switch=True)
    assert hasattr(hiredis, "PushNotification"), changed(
        "hiredis", "PushNotification no longer exists", user, switch=True
    )


def test_redis_connection_has_what_the_lanes_use() -> None:
    import redis
    from redis.sentinel import Sentinel

    user = "delineate/redis_io/ (direct.py, pipelined.py, base.py's watchdog)"
    plain = redis.ConnectionPool.from_url("redis://127.0.0.1:1/0", decode_responses=True)
    sentinel = Sentinel([("127.0.0.1", 1)]).master_for("probe", decode_responses=True).connection_pool
    for pool in (plain, sentinel):
        assert issubclass(pool.connection_class, redis.Connection), changed(
            "redis", f"{type(pool).__name__}.connection_class is not a Connection", user, switch=True
        )
        # The lanes build their own connections as the pool does; none connects yet.
        connection = pool.connection_class(**pool.connection_kwargs)
        assert connection._sock is None, changed(
            "redis", "a new, unconnected Connection's _sock is not None", user, switch=True
        )
        encoder = connection.encoder
        assert (encoder.decode_responses, encoder.encoding) == (True, "utf-8"), changed(
            "redis", "Connection.encoder no longer tells decode_responses and encoding", user, switch=True
        )
    calls = {
        "send_packed_command": ["self", "command", "check_health"],
        "pack_command": ["self", "args"],
        "pack_commands": ["self", "commands"],
    }
    for name, expected in calls.items():
        found = parameters(getattr(redis.Connection, name))
        assert found == expected, changed("redis", f"Connection.{name}{found}", user, switch=True)
    for name in ("connect", "disconnect", "read_response"):
        assert callable(getattr(redis.Connection, name, None)), changed(
            "redis", f"Connection.{name} no longer exists", user, switch=True
        )


# -- werkzeug and Flask: delineate/api/ ------------------------------------------------------------


def test_werkzeug_headers_keep_their_pairs_in_list() -> None:
    from flask import Response
    from werkzeug.datastructures import Headers

    user = "delineate/api/flask_app.py (EdgeResponse) and edge/security.py (append_headers) append to it"
    headers = Headers([("A", "1")])
    target = getattr(headers, "_list", None)
    assert isinstance(target, list), changed("werkzeug", "Headers._list is no longer a list", user, switch=True)
    target.append(("X-Edge", "2"))
    assert list(headers) == headers.to_wsgi_list() == [("A", "1"), ("X-Edge", "2")], changed(
        "werkzeug", "Headers no longer reads its pairs from _list", user, switch=True
    )
    assert parameters(Response.get_wsgi_headers) == ["self", "environ"], changed(
        "werkzeug", "Response.get_wsgi_headers takes other arguments", user, switch=True
    )


def test_flask_json_provider_internals() -> None:
    import json

    from flask import Flask, jsonify
    from flask.json.provider import DefaultJSONProvider, JSONProvider

    from delineate.api.json_provider import OrjsonProvider

    user = "delineate/api/json_provider.py (OrjsonProvider.response) calls it"
    assert parameters(JSONProvider._prepare_response_obj) == ["self", "args", "kwargs"], changed(
        "flask", "JSONProvider._prepare_response_obj takes other arguments", user
    )
    ours, theirs = Flask("ours"), Flask("theirs")
    ours.json = OrjsonProvider(ours)
    theirs.json = DefaultJSONProvider(theirs)
    assert ours.json._app.response_class is ours.response_class, changed("flask", "JSONProvider._app is gone", user)
    for args, kwargs in (((), {"a": 1}), (([1, 2],), {}), ((1, 2), {}), ((), {})):
        with ours.app_context():
            mine = jsonify(*args, **kwargs)
        with theirs.app_context():
            flasks = jsonify(*args, **kwargs)
        assert json.loads(mine.get_data()) == json.loads(flasks.get_data()), changed(
            "flask", f"jsonify{args or ''}{kwargs or ''} means something else", user
        )
        assert mine.mimetype == flasks.mimetype


# -- gunicorn: delineate/api/gunicorn_worker.py, gunicorn_errors.py, deploy/gunicorn.conf.py ---------


def test_gunicorn_worker_hooks_keep_their_signatures() -> None:
    from gunicorn import util
    from gunicorn.glogging import Logger
    from gunicorn.workers.base import Worker
    from gunicorn.workers.base_async import AsyncWorker
    from gunicorn.workers.ggevent import GeventWorker

    fair = "delineate/api/gunicorn_worker.py (FairGeventWorker.handle_request) overrides it"
    assert issubclass(GeventWorker, AsyncWorker), changed("gunicorn", "GeventWorker is not an AsyncWorker", fair)
    for cls in (AsyncWorker, GeventWorker):
        found = parameters(cls.handle_request)
        assert found == ["self", "listener_name", "req", "sock", "addr"], changed(
            "gunicorn", f"{cls.__name__}.handle_request{found}", fair
        )
    # FairGeventWorker yields after each request of a keep-alive connection: the loop must call it.
    assert inspect.getsource(AsyncWorker.handle).count("self.handle_request(") >= 2, changed(
        "gunicorn", "AsyncWorker.handle no longer calls handle_request per request", fair
    )
    errors = "delineate/api/gunicorn_errors.py (JsonErrorsWorker) overrides or calls it"
    found = parameters(Worker.handle_error)
    assert found == ["self", "req", "client", "addr", "exc"], changed("gunicorn", f"Worker.handle_error{found}", errors)
    found = parameters(util.write_nonblock)
    assert found[:2] == ["sock", "data"], changed("gunicorn", f"util.write_nonblock{found}", errors)
    logger = "delineate/api/gunicorn_worker.py (AppAccessLogger) overrides it"
    found = parameters(Logger.access)
    assert found == ["self", "resp", "req", "environ", "request_time"], changed(
        "gunicorn", f"Logger.access{found}", logger
    )
    assert isinstance(inspect.getattr_static(Logger, "access_log_enabled"), property), changed(
        "gunicorn", "Logger.access_log_enabled is no longer a property", logger
    )


def test_gunicorn_puts_the_connection_socket_in_the_environ() -> None:
    from gunicorn.config import Config
    from gunicorn.http import RequestParser, wsgi

    user = "delineate/api/blueprints/stream.py reads environ['gunicorn.socket'] to notice a client that left"
    served, client = socket.socketpair()
    with served, client:
        client.sendall(b"GET /v1/download/stream/x HTTP/1.1\r\nHost: h\r\n\r\n")
        request = next(RequestParser(Config(), served, ("127.0.0.1", 1)))
        _, environ = wsgi.create(request, served, ("127.0.0.1", 1), ("127.0.0.1", 3000), Config())
        assert environ.get("gunicorn.socket") is served, changed(
            "gunicorn", "no 'gunicorn.socket' in the environ", user
        )


def _served_request() -> tuple[Any, Any]:
    """(gunicorn's response, its environ) for a GET, as a worker makes them."""
    from gunicorn.config import Config
    from gunicorn.http import RequestParser, wsgi

    served, client = socket.socketpair()
    with served, client:
        client.sendall(b"GET /v1/download/status/x HTTP/1.1\r\nHost: h\r\n\r\n")
        request = next(RequestParser(Config(), served, ("127.0.0.1", 1)))
        return wsgi.create(request, served, ("127.0.0.1", 1), ("127.0.0.1", 3000), Config())  # type: ignore[no-any-return]


def test_gunicorn_makes_each_response_from_its_wsgi_modules_response_class(monkeypatch: pytest.MonkeyPatch) -> None:
    from gunicorn.http import wsgi

    from delineate.api.gunicorn_worker import CheckedResponse

    user = "delineate/api/gunicorn_worker.py (FairGeventWorker.init_process) puts CheckedResponse there"
    monkeypatch.setattr(wsgi, "Response", CheckedResponse)
    response, _ = _served_request()
    assert type(response) is CheckedResponse, changed("gunicorn", "wsgi.create() no longer uses wsgi.Response", user)
    assert response.headers == [] and response.response_length is None, changed(
        "gunicorn", "Response no longer starts with headers [] and response_length None", user
    )


def test_checked_headers_leave_what_gunicorns_checks_leave() -> None:
    """The fast lane's headers, taken as they are (CheckedResponse), end as gunicorn's own
    checks leave them: the same list, the same length, the same bytes on the wire."""
    from gunicorn.http import wsgi
    from gunicorn.http.errors import InvalidResponseHeader

    from delineate.api.checked_headers import CheckedHeaders
    from delineate.api.gunicorn_worker import CheckedResponse

    user = "delineate/api/gunicorn_worker.py (CheckedResponse) must leave what Response.process_headers leaves"
    headers = [
        ("Content-Type", "application/json"), ("Content-Length", "836"), ("Cache-Control", "no-store"),
        ("X-Request-ID", "ad17cbec-e1c7-40ad-973a-f0780b73e69c"), ("Server-Timing", "app;dur=0.69"),
        ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"), ("RateLimit-Remaining", "99"),
        ("Access-Control-Allow-Origin", "https://console.example"), ("Vary", "Origin"),
    ]  # fmt: skip
    library, _ = _served_request()
    library.start_response("200 OK", list(headers))
    checked, _ = _served_request()
    checked.__class__ = CheckedResponse
    checked.start_response("200 OK", CheckedHeaders(headers, 836))
    assert (checked.headers, checked.response_length) == (library.headers, library.response_length), changed(
        "gunicorn", "process_headers leaves other headers or another length", user
    )
    assert checked.headers is not headers and isinstance(checked.headers, list)
    # Anything else still meets gunicorn's checks.
    refused, _ = _served_request()
    refused.__class__ = CheckedResponse
    with pytest.raises(InvalidResponseHeader):
        refused.start_response("200 OK", [("X-Bad", "a\r\nSet-Cookie: x=1")])
    assert wsgi.Response.process_headers is not CheckedResponse.process_headers


def _conf_file() -> ast.Module:
    return ast.parse((ROOT / "deploy" / "gunicorn.conf.py").read_text())


def test_gunicorn_knows_every_setting_of_our_config_file() -> None:
    """gunicorn skips a name of the config file it does not know, without a word: a renamed
    setting (``control_socket_disable`` is new in 27) would silently be off."""
    from gunicorn import util
    from gunicorn.config import Config
    from gunicorn.glogging import Logger
    from gunicorn.workers.ggevent import GeventWorker

    user = "deploy/gunicorn.conf.py sets it"
    config = Config()
    module = _conf_file()
    for node in module.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.startswith("_"):
                continue
            assert name in config.settings, changed("gunicorn", f"the setting {name!r} no longer exists", user)
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue  # computed at start-up (bind, logconfig_dict): the name is what matters here
            config.set(name, value)  # gunicorn's own validation of the value
        elif isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            assert node.name in config.settings, changed("gunicorn", f"the server hook {node.name!r} is gone", user)
            # The hook as the file defines it, without running the file (it starts things).
            namespace: dict[str, Any] = {}
            exec(compile(ast.Module(body=[node], type_ignores=[]), "gunicorn.conf.py", "exec"), namespace)
            config.set(node.name, namespace[node.name])  # gunicorn checks the hook's arity
    workers = util.load_class(config.settings["worker_class"].get())
    assert issubclass(workers, GeventWorker), changed("gunicorn", "our worker_class is not a GeventWorker", user)
    logger = util.load_class(config.settings["logger_class"].get())
    assert issubclass(logger, Logger), changed("gunicorn", "our logger_class is not a glogging.Logger", user)


def test_gunicorn_installs_its_signal_handlers_before_when_ready() -> None:
    """``delineate.boot.guard_reload`` (our ``when_ready``) wraps the SIGHUP handler gunicorn
    installed; the reload itself is tested in ``tests/integration/test_tenants_api.py``."""
    from gunicorn.arbiter import Arbiter

    source = inspect.getsource(Arbiter.start)
    user = "delineate/boot.py (guard_reload, from deploy/gunicorn.conf.py's when_ready) wraps it"
    assert -1 < source.find("self.init_signals()") < source.find("when_ready("), changed(
        "gunicorn", "Arbiter.start no longer installs its signal handlers before calling when_ready", user
    )


# -- gevent: delineate/api/blueprints/stream.py ---------------------------------------------------


def test_gevent_socket_wraps_the_os_socket_as_sock() -> None:
    import gevent.socket

    from delineate.api.blueprints.stream import _client_gone

    user = "delineate/api/blueprints/stream.py peeks at it without waiting (a gevent recv would block)"
    ours, theirs = gevent.socket.socketpair()
    with ours, theirs:
        assert isinstance(getattr(ours, "_sock", None), socket.SocketType), changed(
            "gevent", "gevent's socket no longer keeps the OS socket as _sock", user
        )
        assert _client_gone(ours) is False
        theirs.close()
        assert _client_gone(ours) is True, changed("gevent", "a peek on _sock no longer sees EOF", user)


# -- prometheus-client: delineate/api/metrics.py ----------------------------------------------------


def test_prometheus_histogram_child_keeps_sum_and_per_bucket_counts() -> None:
    """``RequestMetrics.flush`` adds a process's tallies to a histogram child's ``_sum`` and
    ``_buckets`` (one count per bucket, not cumulative): the same samples as ``observe``."""
    import bisect

    from prometheus_client import CollectorRegistry, Histogram, values

    user = "delineate/api/metrics.py (RequestMetrics.flush) adds to it"
    bounds, seen = (0.1, 1.0), (0.05, 0.5, 0.5, 3.0)
    samples = []
    for way in ("observe", "flush"):
        registry = CollectorRegistry()
        child = Histogram("probe_seconds", "d", ["route"], buckets=bounds, registry=registry).labels("r")
        if way == "observe":
            for value in seen:
                child.observe(value)
        else:
            child._sum.inc(sum(seen))
            for value in seen:
                child._buckets[bisect.bisect_left(bounds, value)].inc(1)
        samples.append(
            [(s.name, s.labels, s.value) for m in registry.collect() for s in m.samples if "created" not in s.name]
        )
    assert samples[0] == samples[1], changed("prometheus-client", "a histogram child's _sum/_buckets changed", user)
    assert values.ValueClass is values.MutexValue, changed(
        "prometheus-client", "values.ValueClass/MutexValue tell multiprocess mode no more", "delineate/api/metrics.py"
    )


# -- botocore: delineate/storage/client.py ---------------------------------------------------------


def test_botocore_parses_timestamps_with_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    from delineate.storage import client

    seen: list[str] = []
    real = client._timestamp
    monkeypatch.setattr(client, "_timestamp", lambda value: seen.append(value) or real(value))
    session = client._botocore_session()
    parser = session.get_component("response_parser_factory").create_parser("rest-xml")
    shape = session.get_service_model("s3").operation_model("HeadObject").output_shape
    answer = {"headers": {"Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT"}, "body": b"", "status_code": 200}
    parsed = parser.parse(answer, shape)
    user = "delineate/storage/client.py (_botocore_session) sets its timestamp parser"
    assert seen and parsed["LastModified"] == datetime(2015, 10, 21, 7, 28, tzinfo=UTC), changed(
        "botocore", "the response_parser_factory component no longer takes set_parser_defaults(timestamp_parser=)", user
    )


# -- Flower: delineate/flower.py, compose.yml -------------------------------------------------------


def test_flower_reads_our_memory_bounds() -> None:
    from flower.command import apply_options
    from tornado.options import options

    from delineate.flower import FLOWER_MAX_TASKS, FLOWER_PURGE_OFFLINE_WORKERS_SECONDS, flower_command

    command = flower_command("/venv/bin/python", 5555)
    saved = options.as_dict()
    try:
        apply_options("flower", command[command.index("flower") + 1 :])  # what `celery flower` does with them
        bounds = (options.max_tasks, options.purge_offline_workers)
    finally:
        for name, value in saved.items():
            setattr(options, name, value)
    assert bounds == (FLOWER_MAX_TASKS, FLOWER_PURGE_OFFLINE_WORKERS_SECONDS), changed(
        "flower",
        f"--max_tasks/--purge_offline_workers read as {bounds}",
        "delineate/flower.py and compose.yml pass them",
    )


# -- setup.cfg ------------------------------------------------------------------------------------

SHAPED = ("kombu", "celery", "redis", "hiredis", "werkzeug", "flask", "gunicorn", "gevent", "prometheus-client",
          "botocore", "flower")  # fmt: skip
"""The distributions whose shapes this module (and its integration half) proves."""


def _install_requires() -> dict[str, Requirement]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = [line.split("#")[0].strip() for line in parser["options"]["install_requires"].splitlines()]
    requirements = [Requirement(line) for line in lines if line]
    return {requirement.name.lower(): requirement for requirement in requirements}


def test_setup_cfg_pins_what_these_tests_cover() -> None:
    """Every library above has an upper bound in install_requires, and every requirement
    admits the version installed here (the one these tests just passed on)."""
    requirements = _install_requires()
    for dist in SHAPED:
        assert dist in requirements, f"setup.cfg: no install_requires line for {dist} (its shapes are tested here)"
        assert any(spec.operator == "<" for spec in requirements[dist].specifier), (
            f"setup.cfg: {dist} has no upper bound"
        )
    for name, requirement in requirements.items():
        installed = version(name)
        assert requirement.specifier.contains(installed, prereleases=True), (
            f"setup.cfg: {requirement} does not admit the installed {name} {installed}"
        )
