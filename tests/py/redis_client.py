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
    first.execute_command("XADD", "py:x", "*", "f", "v")
    raise AssertionError("XADD should be refused")
except redis.ResponseError as e:
    assert "unknown command" in str(e), e

# Hashes, sets and sorted sets: written through one node, read through another.
assert first.hset("py:h", mapping={"a": "1", "b": "2"}) == 2
assert last.hset("py:h", "c", "3") == 1
assert first.hgetall("py:h") == {b"a": b"1", b"b": b"2", b"c": b"3"}
assert last.hincrby("py:h", "a", 10) == 11
assert first.sadd("py:s", "x", "y") == 2
assert last.smembers("py:s") == {b"x", b"y"}
assert first.zadd("py:z", {"m": 1.5, "n": 0.5}) == 2
assert last.zrange("py:z", 0, -1, withscores=True) == [(b"n", 0.5), (b"m", 1.5)]
assert last.type("py:z") == b"zset"

# Expiry set through one node is honoured through the others.
assert first.set("py:ttl", b"v", ex=100) is True
assert 50 <= last.ttl("py:ttl") <= 100, last.ttl("py:ttl")
assert first.set("py:short", b"v", px=300) is True
assert first.expire("py:ttl", 200) is True
assert 150 <= last.ttl("py:ttl") <= 200
assert last.persist("py:ttl") is True
assert first.ttl("py:ttl") == -1
assert first.getex("py:ttl", px=50_000) == b"v"
assert 0 < last.pttl("py:ttl") <= 50_000
assert first.getdel("py:ttl") == b"v" and last.get("py:ttl") is None
import time
deadline = time.monotonic() + 30
while last.get("py:short") is not None:
    assert time.monotonic() < deadline, "py:short never expired"
    time.sleep(0.05)
assert first.exists("py:short") == 0 and first.ttl("py:short") == -2
print("python redis client, expiry: ok")

# Conditional writes through every node: one order per key.
assert first.set("py:nx", b"v", nx=True) is True
assert last.set("py:nx", b"w", nx=True) is None
assert last.get("py:nx") == b"v"
assert [c.incr("py:ctr") for c in (first, last, first)] == [1, 2, 3]
assert last.incrbyfloat("py:f", 1.5) == 1.5
assert first.append("py:nx", b"x") == 2
assert last.getset("py:nx", b"z") == b"vx"
assert first.set("py:lock", b"t1", nx=True, px=10_000) is True
assert last.set("py:lock", b"t2", nx=True, px=10_000) is None
assert last.execute_command("DELIFEQ", "py:lock", "t2") == 0
assert first.execute_command("DELIFEQ", "py:lock", "t1") == 1
assert last.get("py:lock") is None
print("python redis client, conditional writes: ok")

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
