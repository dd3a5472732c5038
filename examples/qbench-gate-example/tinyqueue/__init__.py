"""tinyqueue: a small Redis job queue (a list per queue, LPUSH to send, BRPOP to work)."""

from tinyqueue.queue import Queue

__all__ = ["Queue"]
