"""Clients that keep asking the API while Redis fails over, and record every answer.

Each runs in a thread of the test process until told to stop: a stream of initiates,
a /livez poll, and SSE streams that reconnect (once) with Last-Event-ID.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

FILE_IDS = [70000, 70007, 70014]

REQUEST_BUDGET_SECONDS = 3.0
"""The longest a request may take during a failover (the issue: never a hang over 3 s)."""


@dataclass
class Answer:
    at: float  # time.monotonic() when it was sent
    seconds: float
    status: int  # 0: no answer within the client's timeout
    body: dict[str, Any] = field(default_factory=dict)


class Poller:
    """Calls ``ask`` every ``interval`` seconds in a thread, keeping each Answer."""

    def __init__(self, base: str, interval: float) -> None:
        self.base = base
        self.interval = interval
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Poller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        # A budget a little over 3 s: what takes longer counts as a hang (status 0).
        with httpx.Client(base_url=self.base, timeout=REQUEST_BUDGET_SECONDS + 0.5) as http:
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    response = self.ask(http)
                    body = (
                        response.json()
                        if response.headers.get("content-type", "").startswith("application/json")
                        else {}
                    )
                    answer = Answer(began, time.monotonic() - began, response.status_code, body)
                except httpx.HTTPError:
                    answer = Answer(began, time.monotonic() - began, 0)
                self.answers.append(answer)
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def ask(self, http: httpx.Client) -> httpx.Response:
        raise NotImplementedError


class Initiates(Poller):
    def ask(self, http: httpx.Client) -> httpx.Response:
        return http.post("/v1/download/initiate", json={"file_ids": FILE_IDS})

    def accepted(self) -> list[str]:
        return [a.body["jobId"] for a in self.answers if a.status == 202]


class Livez(Poller):
    def ask(self, http: httpx.Client) -> httpx.Response:
        return http.get("/livez")


class StreamWatch:
    """One job's SSE stream, read to its end; reconnects once with Last-Event-ID."""

    def __init__(self, base: str, job_id: str) -> None:
        self.base = base
        self.job_id = job_id
        self.events: list[str] = []
        self.connections = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def terminal(self) -> str | None:
        last = self.events[-1] if self.events else None
        return last if last in {"completed", "failed", "cancelled"} else None

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        last_id = ""
        for _ in range(2):  # the first connection, and one reconnect
            self.connections += 1
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with (
                    httpx.Client(base_url=self.base, timeout=httpx.Timeout(5, read=20)) as http,
                    http.stream("GET", f"/v1/download/stream/{self.job_id}", headers=headers) as response,
                ):
                    if response.status_code != 200:
                        time.sleep(1)
                        continue
                    for line in response.iter_lines():
                        if line.startswith("event: "):
                            self.events.append(line[len("event: ") :])
                        elif line.startswith("id: "):
                            last_id = line[len("id: ") :]
            except httpx.HTTPError:
                time.sleep(0.5)
            if self.terminal:
                return
