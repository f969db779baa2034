"""kombu's Redis channel with one shared redis-py client (delineate/broker/transport.py),
against the real Redis: the broker URL and what Flower shows stay plain ``redis://``."""

from __future__ import annotations

from flask import Flask
from kombu import Exchange, Queue

from delineate.broker import transport as celery_transport


def test_the_broker_channel_reuses_one_client_and_keeps_its_url(app: Flask) -> None:
    celery = app.extensions["celery"]
    with celery.connection_for_write() as connection:
        assert connection.as_uri().startswith("redis://")
        assert connection.transport.driver_type == "redis"
        channel = connection.default_channel
        assert isinstance(channel, celery_transport.Channel)
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
        # and messages still travel through it
        queue = Queue("tests-shared-client", Exchange("tests-shared-client"), "k", channel=channel)
        queue.declare()
        connection.Producer(channel).publish({"n": 1}, exchange=queue.exchange, routing_key="k")
        message = queue.get(no_ack=True)
        assert message is not None and message.payload == {"n": 1}
        queue.delete()


def test_a_new_pool_gets_a_new_client(app: Flask) -> None:
    with app.extensions["celery"].connection_for_write() as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as before:
            pass
        channel._disconnect_pools()  # what kombu does after a fork
        with channel.conn_or_acquire() as after:
            assert after is not before and after.connection_pool is channel.pool
            assert after.ping()
