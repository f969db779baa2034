"""The steady mixed load of a chaos run, and everything it saw.

- initiates from every tenant at RATE a second in all (one to three sample ids each, a third
  with a callback), each retried with its Idempotency-Key on a 503 or a cut connection, as
  a careful script would;
- every accepted job followed to its end, by a poller (its status every POLL_SECONDS) or by
  an SSE stream (a third of the streams are dropped once mid-job and resumed with
  Last-Event-ID);
- ``/health`` once a second;
- a webhook receiver that checks each delivery's signature with its tenant's secret and can
  be told to answer 500 for a while.

Each request is an :class:`Answer` (its start, its time to the response's head, its status);
each job a :class:`JobSeen`.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson

from bench.chaos.check import TERMINAL, Answer, Deliveries, JobSeen
from bench.chaos.stack import TENANTS, TenantKey
from delineate.dev.seed import SAMPLE_IDS
from delineate.jobs.webhooks import verify

RATE = 3.0
"""Initiates a second, across the tenants."""
POLL_SECONDS = 0.5
SSE_SHARE = 0.35
CALLBACK_SHARE = 0.33
DROP_SHARE = 0.3
"""Of the streams, those cut once by the client mid-job (a flaky network) and resumed."""
ANSWER_WAIT_SECONDS = 5.0
TIMEOUT = httpx.Timeout(ANSWER_WAIT_SECONDS)
"""Longer than any answer may take (1.5 s), so a slow answer is measured, not cut off."""
INITIATE_GIVE_UP_SECONDS = 30.0


class WebhookReceiver:
    """Receives deliveries on 127.0.0.1 at ``/hook/{tenant}``."""

    def __init__(self) -> None:
        self.deliveries = Deliveries()
        self._failing_until = 0.0
        self._lock = threading.Lock()
        receiver = self
        secrets = {t.name: t.secret for t in TENANTS}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ok = time.monotonic() >= receiver._failing_until
                self.send_response(200 if ok else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if ok:
                    receiver._record(self.path, dict(self.headers), body, secrets)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True).start()

    def url(self, tenant: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{tenant}"

    def fail_for(self, seconds: float) -> None:
        self._failing_until = time.monotonic() + seconds

    def _record(self, path: str, headers: dict[str, str], body: bytes, secrets: dict[str, str]) -> None:
        tenant = path.rsplit("/", 1)[-1]
        lower = {k.lower(): v for k, v in headers.items()}
        signature = lower.get("x-delineate-signature", "")
        with self._lock:
            if tenant not in secrets or not verify(body, signature, secrets[tenant]):
                self.deliveries.bad_signatures += 1
                return
            job_id = orjson.loads(body).get("jobId", "")
            self.deliveries.ids.setdefault(job_id, []).append(lower.get("webhook-id", ""))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _proper_503(response: httpx.Response, route: str) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    if route == "health":  # /health keeps its own body, naming the failing check
        return body.get("status") == "unhealthy"
    return (
        "Retry-After" in response.headers
        and bool(body.get("error"))
        and body.get("requestId") == response.headers.get("X-Request-ID")
    )


class Load:
    def __init__(self, base: str, receiver: WebhookReceiver, began: float, heartbeat: float, seed: int) -> None:
        self.base = base
        self.receiver = receiver
        self.began = began
        self.heartbeat = heartbeat
        self.rng = random.Random(seed)
        self.answers: list[Answer] = []
        self.jobs: list[JobSeen] = []
        self.refusals: list[str] = []
        """Initiates refused with a 4xx, or given up on: the load's own faults, reported."""
        self.stream_gaps: list[tuple[float, float]] = []
        """(when, seconds) of every silence on a stream longer than two heartbeats."""
        self.stopping = threading.Event()
        """No new initiates; followers go on until their job ends or ``giving_up``."""
        self.giving_up = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="initiate")

    # -- recording ---------------------------------------------------------------------

    def _now(self) -> float:
        return time.monotonic() - self.began

    def _record(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)

    def call(self, client: httpx.Client, route: str, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        began = time.monotonic()
        try:
            response = client.request(method, path, **kwargs)
        except httpx.HTTPError:
            self._record(Answer(began - self.began, time.monotonic() - began, route, 0))
            return None
        seconds = time.monotonic() - began
        proper = response.status_code == 503 and _proper_503(response, route)
        self._record(Answer(began - self.began, seconds, route, response.status_code, proper))
        return response

    @contextmanager
    def client(self, tenant: TenantKey | None = None) -> Iterator[httpx.Client]:
        headers = {"X-API-Key": tenant.key} if tenant else {}
        with httpx.Client(base_url=self.base, headers=headers, timeout=TIMEOUT) as client:
            yield client

    def _spawn(self, target: Any, *args: Any, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        with self._lock:
            self._threads.append(thread)

    # -- the load ------------------------------------------------------------------------

    def start(self) -> None:
        self._spawn(self._initiate_loop, name="initiates")
        self._spawn(self._health_loop, name="health")

    def stop(self) -> None:
        """No more initiates; waits for the ones in flight."""
        self.stopping.set()
        self._pool.shutdown(wait=True)

    def wait_followers(self, timeout: float) -> bool:
        """Wait for every follower to see its job end; False if some did not within ``timeout``."""
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        self.giving_up.set()
        return all(not t.is_alive() for t in self._threads)

    def _initiate_loop(self) -> None:
        n = 0
        next_at = time.monotonic()
        while not self.stopping.is_set():
            tenant = TENANTS[n % len(TENANTS)]
            self._pool.submit(self._initiate, tenant, n)
            n += 1
            next_at += self.rng.expovariate(RATE)
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def _health_loop(self) -> None:
        with self.client() as client:
            while not self.stopping.wait(1.0):
                self.call(client, "health", "GET", "/health")

    def _initiate(self, tenant: TenantKey, n: int) -> None:
        ids = self.rng.sample(SAMPLE_IDS, self.rng.choice((1, 2, 3)))
        callback = self.rng.random() < CALLBACK_SHARE
        body: dict[str, Any] = {"file_ids": ids}
        if callback:
            body["callback_url"] = self.receiver.url(tenant.name)
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        give_up = time.monotonic() + INITIATE_GIVE_UP_SECONDS
        with self.client(tenant) as client:
            while time.monotonic() < give_up:
                response = self.call(client, "initiate", "POST", "/v1/download/initiate", json=body, headers=headers)
                if response is not None and response.status_code in (200, 202):
                    self._follow(JobSeen(response.json()["jobId"], tenant.name, ids, self._how(), callback), tenant)
                    return
                if response is not None and 400 <= response.status_code < 500:
                    self.refusals.append(f"initiate {n} refused: {response.status_code} {response.text[:200]}")
                    return
                time.sleep(self.rng.uniform(0.2, 0.6))
        self.refusals.append(f"initiate {n} never accepted in {INITIATE_GIVE_UP_SECONDS:g} s")

    def _how(self) -> str:
        return "sse" if self.rng.random() < SSE_SHARE else "poll"

    def _follow(self, job: JobSeen, tenant: TenantKey) -> None:
        with self._lock:
            self.jobs.append(job)
        target = self._stream if job.follow == "sse" else self._poll
        self._spawn(target, job, tenant, name=f"{job.follow}-{job.job_id[:8]}")

    def _poll(self, job: JobSeen, tenant: TenantKey) -> None:
        with self.client(tenant) as client:
            while not self.giving_up.is_set():
                response = self.call(client, "status", "GET", f"/v1/download/status/{job.job_id}")
                if response is not None and response.status_code == 200:
                    status = response.json()
                    job.versions.append(int(status["version"]))
                    if status["status"] in TERMINAL:
                        return
                self.giving_up.wait(POLL_SECONDS)

    def _stream(self, job: JobSeen, tenant: TenantKey) -> None:
        drop_once = self.rng.random() < DROP_SHARE
        path = f"/v1/download/stream/{job.job_id}"
        # a read waits at most two heartbeats: a longer silence is a lost heartbeat
        timeout = httpx.Timeout(5.0, read=2 * self.heartbeat + 1)
        with self.client(tenant) as client:
            while not self.giving_up.is_set():
                headers = {"Last-Event-ID": str(job.versions[-1])} if job.versions else {}
                began = time.monotonic()
                try:
                    with client.stream("GET", path, headers=headers, timeout=timeout) as response:
                        seconds = time.monotonic() - began
                        proper = False
                        if response.status_code != 200:
                            response.read()
                            proper = response.status_code == 503 and _proper_503(response, "stream")
                        self._record(Answer(began - self.began, seconds, "stream", response.status_code, proper))
                        if response.status_code != 200:
                            self.giving_up.wait(0.5)
                            continue
                        ended, dropped = self._read_events(response, job, drop_once)
                        if ended:
                            return
                        drop_once = drop_once and not dropped
                except httpx.ReadTimeout:
                    self.stream_gaps.append((self._now(), 2 * self.heartbeat + 1))
                except httpx.HTTPError:
                    if time.monotonic() - began < ANSWER_WAIT_SECONDS:  # never answered: count it
                        self._record(Answer(began - self.began, time.monotonic() - began, "stream", 0))
                self.giving_up.wait(0.2)

    def _read_events(self, response: httpx.Response, job: JobSeen, drop_once: bool) -> tuple[bool, bool]:
        """Read one connection's events. Returns (the terminal event came, the client dropped it)."""
        event, data = "message", ""
        last_line = time.monotonic()
        for line in response.iter_lines():
            now = time.monotonic()
            if now - last_line > 2 * self.heartbeat:
                self.stream_gaps.append((self._now(), now - last_line))
            last_line = now
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif line == "" and data:
                status = orjson.loads(data)
                job.versions.append(int(status["version"]))
                if event in TERMINAL:
                    job.terminal_events.append(status)
                    return True, False
                if drop_once and event == "progress":
                    return False, True  # closing the response cuts the connection
                event, data = "message", ""
        return False, False
