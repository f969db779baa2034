"""Webhooks per tenant against the real Redis, real receivers and (for ``revoked``) a real
Celery worker: each tenant's deliveries signed with its own secret and naming it, sent only
to its own hosts; URLs normalised as they are sent; any failure of the HTTP client a
recorded, retried attempt; a listed literal address opening only itself on its port; and
the one ``revoked`` delivery of a revoked job.

Two tenants from a TENANTS_FILE: alice and bob, each with a receiver of its own and one
they share. Jobs are written to the store as a worker leaves them, and the delivery is
driven in-process with ``webhooks.deliver`` (the task's body), except for ``revoked``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from delineate import create_app
from delineate.config import Settings
from delineate.config.tenants import Tenants
from delineate.errors import InvalidRequest
from delineate.ids import new_uuid
from delineate.jobs import webhook_http, webhooks
from delineate.jobs.sweeper import SweepReport, sweeper_for
from delineate.models import Job, JobState, Phase
from delineate.services import build_services
from delineate.store import JobStore, errorlog, revocation_hooks
from delineate.store.keys import WEBHOOKS_KEY
from tests.support.receivers import WebhookReceiver
from tests.support.stack import start_worker, wait_for

ALICE_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BOB_SECRET = "bob-plain-text-secret"


class Hook:
    """A receiver that also records each request's path and answers ``statuses`` in turn."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.statuses: list[int] = []
        self.receiver = WebhookReceiver(answer=self._answer)
        self.port = self.receiver.port

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        self.paths.append(handler.path)
        handler.send_response(self.statuses.pop(0) if self.statuses else 200)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def received(self) -> list[tuple[dict[str, str], bytes]]:
        return self.receiver.received

    def reset(self) -> None:
        self.paths.clear()
        self.statuses.clear()
        self.receiver.received.clear()


@dataclass
class World:
    settings: Settings
    alice: Hook  # listed for alice only
    bob: Hook  # listed for bob only
    shared: Hook  # listed for both
    store: JobStore
    tenants: Tenants


@pytest.fixture(scope="module")
def world(make_settings: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    alice, bob, shared = Hook(), Hook(), Hook()
    path = tmp_path_factory.mktemp("tenants") / "tenants.toml"
    path.write_text(
        f"""
[tenants.alice]
keys = ["alice-key-0001"]
callback_hosts = ["127.0.0.1:{alice.port}", "127.0.0.1:{shared.port}", "localhost:{alice.port}"]
webhook_secret = "{ALICE_SECRET}"

[tenants.bob]
keys = ["bob-key-0001"]
callback_hosts = ["127.0.0.1:{bob.port}", "127.0.0.1:{shared.port}"]
webhook_secret = "{BOB_SECRET}"
"""
    )
    settings = make_settings(
        tenants_file=str(path),
        callback_allowed_hosts=(),  # nothing beyond the tenants' own hosts
        callback_secret="",
        webhook_retry_base_seconds=0.2,
        webhook_retry_max_delay_seconds=0.5,
        sweep_interval_seconds=1,
    )
    svc = build_services(settings)  # a store without the hook that queues attempt 1
    yield World(settings, alice, bob, shared, svc.store, svc.tenants.current)
    for hook in (alice, bob, shared):
        hook.receiver.close()


@pytest.fixture(autouse=True)
def _fresh_receivers(world: World) -> None:
    for hook in (world.alice, world.bob, world.shared):
        hook.reset()


def ended_job(store: JobStore, owner: str, url: str, state: JobState = JobState.COMPLETED) -> Job:
    """A job of ``owner`` with callback ``url``, written as a worker leaves it at its end."""
    job = Job(job_id=new_uuid(), status=JobState.QUEUED, file_ids=[70000], owner=owner, callback_url=url)
    job.callback = webhooks.pending_callback()
    store.create(job)
    progress = 100 if state is JobState.COMPLETED else 0
    store.update(job.job_id, status=state, phase=Phase.DONE, progress=progress)
    return job


def events_of(hook: Hook, job_id: str) -> list[str]:
    """The events ``hook`` received for ``job_id`` (other tests' retries may reach it too)."""
    return [h["x-delineate-event"] for h, body in hook.received if json.loads(body)["jobId"] == job_id]


def callback_of(store: JobStore, job_id: str) -> dict[str, Any]:
    job = store.get(job_id)
    assert job is not None
    return job.callback or {}


def verifies(body: bytes, headers: dict[str, str], secret: str) -> bool:
    """Both signatures, as a receiver holding ``secret`` checks them."""
    verifier = Webhook(secret) if secret.startswith("whsec_") else Webhook(secret.encode())
    try:
        verifier.verify(body, headers)
    except WebhookVerificationError:
        return False
    return webhooks.verify(body, headers["x-delineate-signature"], secret)


# -- signed per tenant, naming the tenant ------------------------------------------------------


def test_each_tenant_signs_with_its_own_secret_and_the_body_names_it(world: World) -> None:
    a = ended_job(world.store, "alice", world.shared.url())
    b = ended_job(world.store, "bob", world.shared.url(), JobState.FAILED)
    for job in (a, b):
        attempt = webhooks.deliver(world.store, world.settings, world.tenants, job.job_id, 1)
        assert attempt is not None and attempt.delivered, attempt
    by_owner = {json.loads(body)["owner"]: (headers, body) for headers, body in world.shared.received}
    assert set(by_owner) == {"alice", "bob"}
    headers, body = by_owner["alice"]
    status = json.loads(body)
    assert status["jobId"] == a.job_id and status["status"] == "completed" and status["owner"] == "alice"
    assert headers["x-delineate-event"] == "completed"
    assert verifies(body, headers, ALICE_SECRET)
    assert not verifies(body, headers, BOB_SECRET)  # bob cannot pass off, nor accept, alice's delivery
    headers, body = by_owner["bob"]
    assert json.loads(body)["owner"] == "bob" and headers["x-delineate-event"] == "failed"
    assert verifies(body, headers, BOB_SECRET) and not verifies(body, headers, ALICE_SECRET)


def test_open_mode_names_the_empty_owner(make_settings: Any) -> None:
    hook = Hook()
    try:
        settings = make_settings(callback_allowed_hosts=(f"127.0.0.1:{hook.port}",), callback_secret="s3cret")
        svc = build_services(settings)
        job = ended_job(svc.store, "", hook.url())
        attempt = webhooks.deliver(svc.store, settings, svc.tenants.current, job.job_id, 1)
        assert attempt is not None and attempt.delivered, attempt
        headers, body = hook.received[0]
        assert json.loads(body)["owner"] == "" and verifies(body, headers, "s3cret")
    finally:
        hook.receiver.close()


# -- each tenant's own hosts -----------------------------------------------------------------------


def test_a_tenant_cannot_target_another_tenants_host(world: World) -> None:
    alice = world.tenants.tenant("alice")
    assert webhooks.check_callback_url(world.alice.url(), alice) == world.alice.url()
    assert webhooks.check_callback_url(world.shared.url(), alice) == world.shared.url()
    with pytest.raises(InvalidRequest) as info:
        webhooks.check_callback_url(world.bob.url(), alice)
    assert info.value.status_code == 400 and "callback hosts" in info.value.message
    # A job that names bob's host anyway (written before alice's hosts changed, say) is
    # refused at delivery, for good: nothing reaches bob's receiver.
    job = ended_job(world.store, "alice", world.bob.url())
    attempt = webhooks.deliver(world.store, world.settings, world.tenants, job.job_id, 1)
    assert attempt is not None and not attempt.delivered and not attempt.retryable
    assert "callback hosts" in (attempt.error or "")
    assert callback_of(world.store, job.job_id)["status"] == "failed"
    assert world.bob.received == []
    assert world.store.redis.zscore(WEBHOOKS_KEY, job.job_id) is None  # nothing left scheduled


def test_a_job_of_a_tenant_that_is_gone_is_never_signed_with_another_secret(world: World) -> None:
    job = ended_job(world.store, "carol", world.shared.url())  # carol left the file
    attempt = webhooks.deliver(world.store, world.settings, world.tenants, job.job_id, 1)
    assert attempt is not None and not attempt.delivered and "no longer exists" in (attempt.error or "")
    assert world.shared.received == []


# -- URLs as they are sent -------------------------------------------------------------------------


def test_a_non_ascii_path_is_accepted_and_delivered_percent_encoded(world: World) -> None:
    alice = world.tenants.tenant("alice")
    url = webhooks.check_callback_url(world.alice.url("/é?q=ü"), alice)
    assert url == world.alice.url("/%C3%A9?q=%C3%BC")
    job = ended_job(world.store, "alice", url)
    attempt = webhooks.deliver(world.store, world.settings, world.tenants, job.job_id, 1)
    assert attempt is not None and attempt.delivered, attempt
    assert world.alice.paths == ["/%C3%A9?q=%C3%BC"]
    # One stored before URLs were normalised goes out the same way.
    legacy = ended_job(world.store, "alice", world.alice.url("/é"))
    attempt = webhooks.deliver(world.store, world.settings, world.tenants, legacy.job_id, 1)
    assert attempt is not None and attempt.delivered, attempt
    assert world.alice.paths[-1] == "/%C3%A9"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://xn--zz.example/h", "punycode"),
        ("http://bad\u200bhost.example/h", "internationalised"),
        ("http://exa mple.com/h", "whitespace"),
        ("http://127.0.0.1:1/\x01", "control"),
    ],
)
def test_a_url_that_cannot_be_normalised_is_a_400_naming_the_problem(world: World, url: str, problem: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        webhooks.check_callback_url(url, world.tenants.tenant("alice"))
    assert info.value.status_code == 400 and problem in info.value.message


# -- a failure of any kind is a failed attempt ---------------------------------------------------


def test_an_http_client_that_raises_is_a_recorded_failed_attempt_then_retried(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without normalisation, httpcore raises TypeError on a non-ASCII URL (the bug once
    seen): the attempt is failed, recorded, retried by the schedule, never raised."""
    job = ended_job(world.store, "alice", world.alice.url("/é"))
    with monkeypatch.context() as patch:
        patch.setattr(webhook_http, "normalise_url", lambda url: url)
        caplog.set_level(logging.DEBUG, logger="delineate.jobs.webhooks")
        attempt = webhooks.deliver(world.store, world.settings, world.tenants, job.job_id, 1)
    assert attempt is not None and not attempt.delivered and attempt.retryable
    assert (attempt.error or "").startswith("TypeError")
    callback = callback_of(world.store, job.job_id)
    assert callback["status"] == "retrying" and callback["attempts"] == 1 and "TypeError" in callback["lastError"]
    assert world.store.redis.zscore(WEBHOOKS_KEY, job.job_id) is not None  # the next attempt is scheduled
    errors = errorlog.decode(world.store.redis.execute_command(*errorlog.read_command("alice", 100)))
    assert any(e.get("jobId") == job.job_id and "TypeError" in e["message"] for e in errors)
    assert not any(r.exc_info for r in caplog.records if r.levelno >= logging.WARNING)  # no traceback
    assert world.alice.received == []
    attempt = webhooks.deliver(world.store, world.settings, world.tenants, job.job_id, 2)  # the retry
    assert attempt is not None and attempt.delivered, attempt
    assert callback_of(world.store, job.job_id) == {"status": "delivered", "attempts": 2, "lastError": None}
    assert world.alice.paths == ["/%C3%A9"]


def test_a_status_that_cannot_be_built_is_a_failed_attempt(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    job = ended_job(world.store, "alice", world.alice.url())

    def broken(job: Job) -> dict[str, Any]:
        raise RuntimeError("the object store did not answer")  # a link that could not be signed

    monkeypatch.setattr(world.store, "status", broken)
    attempt = webhooks.deliver(world.store, world.settings, world.tenants, job.job_id, 1)
    assert attempt is not None and not attempt.delivered and attempt.retryable
    assert "RuntimeError" in (attempt.error or "") and callback_of(world.store, job.job_id)["status"] == "retrying"
    assert world.alice.received == []


# -- a listed literal opens only itself, on its port ---------------------------------------------


def test_a_listed_literal_opens_only_its_port_and_never_a_name(world: World) -> None:
    alice = world.tenants.tenant("alice")  # lists 127.0.0.1:<alice> and localhost:<alice>
    other = world.bob.port  # a port listed for 127.0.0.1 by bob, not by alice
    with pytest.raises(InvalidRequest, match="callback hosts"):
        webhooks.check_callback_url(f"http://127.0.0.1:{other}/hook", alice)
    with pytest.raises(InvalidRequest, match="callback hosts"):
        webhooks.check_callback_url("http://127.0.0.1/hook", alice)  # not port 80 either
    wrong_port = ended_job(world.store, "alice", f"http://127.0.0.1:{other}/hook")
    attempt = webhooks.deliver(world.store, world.settings, world.tenants, wrong_port.job_id, 1)
    assert attempt is not None and not attempt.delivered and "callback hosts" in (attempt.error or "")
    # localhost is listed as a name: accepted, but it resolves inward, and 127.0.0.1 being
    # listed does not make the name acceptable.
    url = webhooks.check_callback_url(f"http://localhost:{world.alice.port}/hook", alice)
    by_name = ended_job(world.store, "alice", url)
    attempt = webhooks.deliver(world.store, world.settings, world.tenants, by_name.job_id, 1)
    assert attempt is not None and not attempt.delivered and "not a public address" in (attempt.error or "")
    assert world.alice.received == [] and world.bob.received == []
    literal = ended_job(world.store, "alice", world.alice.url())
    attempt = webhooks.deliver(world.store, world.settings, world.tenants, literal.job_id, 1)
    assert attempt is not None and attempt.delivered, attempt


# -- revoked --------------------------------------------------------------------------------------


def revoke(store: JobStore, job_id: str) -> list[bool]:
    """Revoke through the store; what ``on_revoked`` was told (empty: not revoked by this call)."""
    told: list[bool] = []
    store.revoke(job_id, on_revoked=lambda _job, send: told.append(send))
    return told


def test_send_revoked_delivers_one_revoked_event(world: World, workdir: Path) -> None:
    """Through a real worker: the job's own delivery (attempt 1 sent by the store's hook),
    then, revoked, one ``revoked`` delivery; a 500 is retried through the sweeper's index."""
    app = create_app(world.settings)  # its store sends attempt 1 when a job ends
    store, celery = app.extensions["delineate"].store, app.extensions["celery"]
    worker = start_worker(world.settings, workdir, "worker-tenant-hooks", concurrency=2)
    try:
        job = ended_job(store, "alice", world.alice.url())
        wait_for(lambda: callback_of(store, job.job_id).get("status") == "delivered", 20, "the completed delivery")
        world.alice.statuses[:] = [500]  # the revoked event's first attempt fails
        assert revoke(store, job.job_id) == [True]  # its own delivery is over: send now
        webhooks.send_revoked(celery, job.job_id)
        assert revoke(store, job.job_id) == []  # at most once per job
        sweeper = sweeper_for(celery)

        def revoked_delivered() -> bool:
            sweeper.drive_webhooks(SweepReport())  # what each sweep does with due deliveries
            return (revocation_hooks.state(store, job.job_id) or {}).get("status") == "delivered"

        wait_for(revoked_delivered, 30, "the revoked delivery")
        time.sleep(0.5)  # nothing else arrives
        assert events_of(world.alice, job.job_id) == ["completed", "revoked", "revoked"]  # the 500, then the retry
        headers, body = [r for r in world.alice.received if json.loads(r[1])["jobId"] == job.job_id][-1]
        status = json.loads(body)
        assert status["jobId"] == job.job_id and status["owner"] == "alice" and status["revokedAt"]
        assert status["status"] == "completed"
        assert verifies(body, headers, ALICE_SECRET) and not verifies(body, headers, BOB_SECRET)
        assert headers["webhook-id"] == f"{job.job_id}:revoked"  # not the completed delivery's id
        state = revocation_hooks.state(store, job.job_id)
        assert state is not None and state["attempts"] == 2 and state["lastError"] is None
        assert callback_of(store, job.job_id)["status"] == "delivered"  # the job's own record untouched
        assert store.redis.zscore(WEBHOOKS_KEY, job.job_id) is None
    finally:
        worker.stop()


def test_a_revoked_event_waits_for_the_jobs_own_delivery(world: World) -> None:
    """Revoked while its own delivery is still retrying: no message yet; the attempt that
    ends the job's own delivery makes the revoked one due, and the sweeper's next message
    (its attempt number from the job's own record) carries it."""
    world.bob.statuses[:] = [503]
    job = ended_job(world.store, "bob", world.bob.url())
    first = webhooks.deliver(world.store, world.settings, world.tenants, job.job_id, 1)
    assert first is not None and first.retryable
    assert revoke(world.store, job.job_id) == [False]  # recorded, waiting behind its own delivery
    assert revocation_hooks.state(world.store, job.job_id)["status"] == "pending"  # type: ignore[index]
    # The sweeper sends attempt 2 of the job's own delivery: it is delivered, then the
    # revoked delivery is due at once.
    assert webhooks.deliver(world.store, world.settings, world.tenants, job.job_id, 2).delivered  # type: ignore[union-attr]
    assert world.store.due_webhooks(time.time() + 1, 100).count(job.job_id) == 1
    attempt = webhooks.deliver(world.store, world.settings, world.tenants, job.job_id, 3)  # the sweeper's message
    assert attempt is not None and attempt.delivered, attempt
    assert events_of(world.bob, job.job_id) == ["completed", "completed", "revoked"]
    assert (revocation_hooks.state(world.store, job.job_id) or {})["status"] == "delivered"
    assert webhooks.deliver(world.store, world.settings, world.tenants, job.job_id, 3) is None  # nothing more
    assert len(events_of(world.bob, job.job_id)) == 3


def test_a_revoked_job_without_a_callback_owes_no_delivery(world: World) -> None:
    plain = Job(job_id=new_uuid(), status=JobState.QUEUED, file_ids=[70000], owner="alice")
    world.store.create(plain)
    world.store.update(plain.job_id, status=JobState.COMPLETED, phase=Phase.DONE, progress=100)
    assert revoke(world.store, plain.job_id) == [False]
    assert revocation_hooks.state(world.store, plain.job_id) is None
    assert world.store.redis.zscore(WEBHOOKS_KEY, plain.job_id) is None


def test_the_sweeper_sends_a_revoked_delivery_whose_request_died(world: World) -> None:
    """Revoked, and the request died before sending the first attempt: the schedule the
    revoking step wrote comes due and the sweeper's message delivers it."""
    job = ended_job(world.store, "alice", world.alice.url())
    assert webhooks.deliver(world.store, world.settings, world.tenants, job.job_id, 1).delivered  # type: ignore[union-attr]
    assert revoke(world.store, job.job_id) == [True]  # ... and no send_revoked: the request died
    due = world.store.redis.zscore(WEBHOOKS_KEY, job.job_id)
    assert due is not None and due > time.time()  # a claim period ahead: the sweeper's, unless sent before
    assert job.job_id in world.store.due_webhooks(due + 1, 100)
    attempt = webhooks.deliver(world.store, world.settings, world.tenants, job.job_id, 2)  # the sweeper's message
    assert attempt is not None and attempt.delivered
    assert events_of(world.alice, job.job_id) == ["completed", "revoked"]


def test_a_link_a_delivery_carries_is_audited(world: World, caplog: pytest.LogCaptureFixture) -> None:
    job = Job(
        job_id=new_uuid(), status=JobState.QUEUED, file_ids=[70000], owner="alice", callback_url=world.alice.url()
    )
    job.callback = webhooks.pending_callback()
    world.store.create(job)
    world.store.update(  # completed with a result: its status carries a link
        job.job_id,
        status=JobState.COMPLETED,
        phase=Phase.DONE,
        progress=100,
        resultKey="downloads/70000.zip",
        size=1024,
    )
    caplog.set_level(logging.INFO, logger="delineate.audit")
    attempt = webhooks.deliver(world.store, world.settings, world.tenants, job.job_id, 1)
    assert attempt is not None and attempt.delivered
    body = json.loads([b for h, b in world.alice.received if json.loads(b)["jobId"] == job.job_id][-1])
    assert body["downloadUrl"]
    [line] = [r for r in caplog.records if r.name == "delineate.audit"]
    assert (line.jobId, line.owner, line.requestId, line.client, line.via) == (  # type: ignore[attr-defined]
        job.job_id, "alice", job.job_id, "127.0.0.1", "webhook"
    )  # fmt: skip
