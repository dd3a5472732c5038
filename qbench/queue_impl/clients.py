"""The two kinds of redis-py client the queue works with: one server, or a Redis Cluster."""

from __future__ import annotations

from redis import Redis
from redis.cluster import RedisCluster

RedisClient = Redis | RedisCluster
"""A single-node client or a cluster client. Their pipelines are subclasses of each, so a
write that may go to a pipeline or straight to the server takes this type too."""
