"""A real Redis client library (redis-py from PyPI) against a kvstore cluster.

Usage: redis_client.py PORT1 PORT2 PORT3. Exits non-zero (with a traceback) on any mismatch.
"""
import sys

import redis

ports = [int(p) for p in sys.argv[1:]]
clients = [redis.Redis(host="127.0.0.1", port=p, socket_timeout=20) for p in ports]
first, last = clients[0], clients[-1]

assert first.ping() is True
assert first.set("py:k1", b"v1") is True
assert first.get("py:k1") == b"v1"
assert first.get("py:missing") is None

first.mset({"py:a": "1", "py:b": "2", "py:c": "3"})
assert first.mget("py:a", "py:b", "py:missing", "py:c") == [b"1", b"2", None, b"3"]
assert first.exists("py:a", "py:b", "py:missing") == 2
assert first.delete("py:a", "py:b", "py:missing") == 2
assert first.get("py:a") is None

# A write through the first node reads back through the last.
first.set("py:cross", b"\x00binary\r\nvalue\xff")
assert last.get("py:cross") == b"\x00binary\r\nvalue\xff"

# Pipelining: answers come back in order.
pipe = first.pipeline(transaction=False)
for i in range(500):
    pipe.set(f"py:p{i}", str(i))
for i in range(500):
    pipe.get(f"py:p{i}")
answers = pipe.execute()
assert answers[:500] == [True] * 500, answers[:5]
assert answers[500:] == [str(i).encode() for i in range(500)], answers[500:505]
for i in range(0, 500, 50):
    assert last.get(f"py:p{i}") == str(i).encode()

try:
    first.execute_command("FLUSHALL")
    raise AssertionError("FLUSHALL should be refused")
except redis.ResponseError as e:
    assert "unknown command" in str(e), e

info = first.info()
assert info["redis_version"], info
assert info["cluster_enabled"] == 0, info
print("python redis client: ok")

# The same through RESP2 (the library's default is RESP3 via HELLO 3).
resp2 = redis.Redis(host="127.0.0.1", port=ports[1], protocol=2, socket_timeout=20)
assert resp2.get("py:cross") == b"\x00binary\r\nvalue\xff"
assert resp2.get("py:missing") is None
assert resp2.mget("py:k1", "py:missing") == [b"v1", None]
assert resp2.config_get("appendonly") == {"appendonly": "yes"}, resp2.config_get("appendonly")
assert first.config_get("appendonly") == {"appendonly": "yes"}, first.config_get("appendonly")
print("python redis client (RESP2 and RESP3): ok")
