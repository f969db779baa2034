"""Protocol peers for the tests: an OTLP/HTTP trace receiver, a Sentry ingest and a webhook
receiver.

All are plain HTTP servers on free ports; the first two decode what the real SDKs send:
OTLP protobuf (``ExportTraceServiceRequest``, the Python SDK) or OTLP/JSON (the browser's
exporter), and Sentry envelopes (gzip, brotli or plain). Both answer CORS preflights and
allow any origin, as a collector configured for the console must (Jaeger's
``--collector.otlp.http.cors.allowed-origins``).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind: 2 server, 3 client, 4 producer, 5 consumer
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]


class _Receiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.preflights: list[tuple[str, dict[str, str]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.requests.append((self.path, dict(self.headers), body))
                reply, content_type = receiver.reply(self.path)
                self.send_response(200)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def do_OPTIONS(self) -> None:  # a browser's CORS preflight
                with receiver.lock:
                    receiver.preflights.append((self.path, dict(self.headers)))
                self.send_response(204)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
                self.send_header(
                    "Access-Control-Allow-Headers", self.headers.get("Access-Control-Request-Headers", "*")
                )
                self.send_header("Access-Control-Max-Age", "600")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def reply(self, path: str) -> tuple[bytes, str]:
        return b"{}", "application/json"

    def start(self) -> _Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, find: Callable[[], T | None], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = find()
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"{what} never arrived within {timeout} s")


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.lower()
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        import brotli  # only installed where the SDK itself would use it

        return brotli.decompress(body)  # type: ignore[no-any-return]
    return body


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class OtlpReceiver(_Receiver):
    """Answers ``POST /v1/traces`` like a collector and keeps every span it was sent."""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(self, path: str) -> tuple[bytes, str]:
        return ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf"

    def spans(self) -> list[Span]:
        with self.lock:
            requests = list(self.requests)
        spans = []
        for path, headers, body in requests:
            if path != "/v1/traces":
                continue
            raw = _decompress(body, headers.get("Content-Encoding", ""))
            if headers.get("Content-Type", "").startswith("application/json"):
                spans.extend(_json_spans(json.loads(raw)))
                continue
            message = ExportTraceServiceRequest()
            message.ParseFromString(raw)
            for resource_spans in message.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        spans.append(
                            Span(
                                service=str(resource.get("service.name")),
                                name=span.name,
                                kind=span.kind,
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_span_id=span.parent_span_id.hex(),
                                attributes={a.key: _value(a.value) for a in span.attributes},
                            )
                        )
        return spans


def _json_value(value: dict[str, Any]) -> Any:
    for kind in ("stringValue", "boolValue", "intValue", "doubleValue"):
        if kind in value:
            return int(value[kind]) if kind == "intValue" else value[kind]
    return None


def _json_spans(message: dict[str, Any]) -> list[Span]:
    """Spans of an OTLP/JSON export (ids are hex strings there, kinds numbers)."""
    spans = []
    for resource_spans in message.get("resourceSpans", []):
        resource = {a["key"]: _json_value(a["value"]) for a in resource_spans.get("resource", {}).get("attributes", [])}
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                spans.append(
                    Span(
                        service=str(resource.get("service.name")),
                        name=span["name"],
                        kind=int(span.get("kind", 0)),
                        trace_id=span["traceId"].lower(),
                        span_id=span["spanId"].lower(),
                        parent_span_id=(span.get("parentSpanId") or "").lower(),
                        attributes={a["key"]: _json_value(a["value"]) for a in span.get("attributes", [])},
                    )
                )
    return spans


class SentryReceiver(_Receiver):
    """Stands in for Sentry's ingest: ``POST /api/<project>/envelope/``, keeps the events."""

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.port}/1"

    def raw_texts(self) -> list[str]:
        """Every envelope, decompressed, as text (to search for secrets)."""
        with self.lock:
            requests = list(self.requests)
        return [
            _decompress(body, headers.get("Content-Encoding", "")).decode("utf-8", "replace")
            for _, headers, body in requests
        ]

    def events(self) -> list[dict[str, Any]]:
        return self.items("event")

    def items(self, kind: str) -> list[dict[str, Any]]:
        """The payloads of every envelope item of type ``kind`` (``event``, ``transaction``, ``feedback``)."""
        events = []
        for text in self.raw_texts():
            lines = text.split("\n")
            # envelope header, then (item header, payload) pairs; payloads here are one JSON line
            i = 1
            while i + 1 < len(lines):
                try:
                    header = json.loads(lines[i])
                except ValueError:
                    i += 1
                    continue
                if header.get("type") == kind:
                    events.append(json.loads(lines[i + 1]))
                i += 2
        return events


class WebhookReceiver:
    """Records webhook deliveries on 127.0.0.1; answers with ``statuses`` in turn (then 200),
    or lets ``answer`` write the whole reply. A GET (where a redirect would lead) is recorded too."""

    def __init__(
        self,
        statuses: Sequence[int] = (),
        port: int = 0,
        answer: Callable[[BaseHTTPRequestHandler], None] | None = None,
    ) -> None:
        self.statuses = list(statuses)
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if answer is not None:
                    answer(self)
                    return
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                receiver.received.append(({"method": "GET"}, b""))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
