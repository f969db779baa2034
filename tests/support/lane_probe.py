"""Run by tests/integration/test_redis_lanes.py in its own process: the gevent lane, exercised.

Usage: python -m tests.support.lane_probe PORT SCENARIO; prints one JSON line with what it saw.
gevent patches everything first, as gunicorn's gevent worker does.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402

from delineate.redis_io import lane_for  # noqa: E402


def main() -> None:
    port, scenario = int(sys.argv[1]), sys.argv[2]
    client = redis.Redis.from_url(f"redis://127.0.0.1:{port}/0", decode_responses=True, socket_timeout=1.0)
    lane = lane_for(client)
    out: dict[str, object] = {"lane": type(lane).__name__}
    if scenario == "concurrent":
        # 300 greenlets at once, each with its own ECHO and a shared counter: every
        # caller must get exactly its own replies, in its own order.
        client.delete("n")

        def one(i: int) -> bool:
            replies = lane.execute(("ECHO", f"mine-{i}"), ("INCR", "n"), ("ECHO", f"also-{i}"))
            return replies[0] == f"mine-{i}" and replies[2] == f"also-{i}" and isinstance(replies[1], int)

        jobs = [gevent.spawn(one, i) for i in range(300)]
        gevent.joinall(jobs, timeout=20)
        out["own_replies"] = sum(1 for j in jobs if j.value)
        out["counter"] = int(client.get("n") or 0)

        # An error reply reaches its caller only; the others' replies are intact.
        def bad() -> str:
            try:
                lane.execute(("ECHO", "before"), ("INCR", "not-a-number-key"))
                return "no error"
            except redis.ResponseError as exc:
                return type(exc).__name__

        client.set("not-a-number-key", "x")
        results = gevent.joinall([gevent.spawn(bad), gevent.spawn(lane.command, "ECHO", "after")], timeout=5)
        out["error"] = results[0].value
        out["after_error"] = results[1].value
        # Scripts: EVALSHA, and EVAL again once Redis has forgotten them.
        script = lane.script("return ARGV[1]")
        out["script"] = script(args=["x"])
        client.script_flush()
        out["script_after_flush"] = script(args=["y"])
        out["hash"] = (client.hset("h", mapping={"a": "1"}), lane.command("HGETALL", "h"))[1]
    elif scenario in ("stopped", "down"):
        lane.command("PING")
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.readline()  # the test stops Redis now (SIGSTOP, or for good)
        began = time.monotonic()
        try:
            lane.command("PING")
            out["error"] = None
        except redis.RedisError as exc:
            out["error"] = type(exc).__name__
        out["seconds"] = time.monotonic() - began
    elif scenario == "restart":
        lane.command("PING")
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.readline()  # the test restarts Redis on the same port now
        results = []
        for _ in range(3):
            try:
                results.append(lane.command("PING"))
            except redis.RedisError as exc:
                results.append(type(exc).__name__)
        out["results"] = results
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
