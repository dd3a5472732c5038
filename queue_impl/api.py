"""Job submission HTTP API: `python -m queue_impl.api` (FastAPI on uvicorn, 127.0.0.1 by default)."""

from __future__ import annotations

import argparse
import base64
import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import redis
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from queue_impl.config import VariantError, parse_variant
from queue_impl.connection import make_client
from queue_impl.job import Job, Priority
from queue_impl.queue import RedisQueue

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
REQUEST_THREADS = 40
"""Starlette runs sync endpoints on AnyIO's default pool of 40 threads: size the Redis pool for them."""


class SubmitRequest(BaseModel):
    """A job to enqueue. `payload` is UTF-8 text, or base64 when `payload_encoding` says so."""

    type: Annotated[str, Field(min_length=1, max_length=200)]
    payload: str = ""
    payload_encoding: Literal["text", "base64"] = "text"
    priority: Literal["high", "normal", "low"] = "normal"
    max_retries: Annotated[int, Field(ge=0, le=100)] = 3


class SubmitResponse(BaseModel):
    id: str


def job_document(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "type": job.type,
        "payload_base64": base64.b64encode(job.payload).decode(),
        "priority": job.priority.label,
        "status": job.status.name.lower(),
        "attempts": job.attempts,
        "max_retries": job.max_retries,
        "created_at_us": job.created_at_us,
        "scheduled_at_us": job.scheduled_at_us,
        "started_at_us": job.started_at_us,
        "finished_at_us": job.finished_at_us,
        "last_error": job.last_error,
    }


def create_app(queue: RedisQueue) -> FastAPI:
    """The API over `queue`. Endpoints are sync: redis-py is sync, so they run on threads."""
    app = FastAPI(title="qbench submission API", version="1")

    @app.post("/jobs", status_code=201)
    def submit(request: SubmitRequest) -> SubmitResponse:
        try:
            payload = (
                base64.b64decode(request.payload, validate=True)
                if request.payload_encoding == "base64"
                else request.payload.encode()
            )
        except ValueError:
            raise HTTPException(status_code=422, detail="payload is not valid base64") from None
        job = Job(
            type=request.type,
            payload=payload,
            priority=Priority.parse(request.priority),
            max_retries=request.max_retries,
        )
        return SubmitResponse(id=queue.enqueue(job))

    @app.get("/jobs/{job_id}")
    def read_job(job_id: str) -> dict[str, Any]:
        job = queue.get_job(job_id)
        if job is None:
            raise HTTPException(status_code=404, detail=f"no job {job_id}")
        return job_document(job)

    @app.get("/stats")
    def read_stats() -> dict[str, object]:
        return queue.stats().as_dict()

    @app.get("/healthz")
    def health() -> dict[str, str]:
        queue.client.ping()
        return {"status": "ok", "variant": queue.variant.label(), "namespace": queue.namespace}

    return app


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m queue_impl.api", description=__doc__)
    parser.add_argument("--host", default=DEFAULT_HOST, help="bind address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--variant", default="optimized", help="preset[+toggle=value,...]")
    parser.add_argument("--redis-url", default=None, help=f"default: REDIS_URL, else {DEFAULT_REDIS_URL}")
    parser.add_argument("--namespace", default="api", help="queue namespace (keys qbench:{NS}:...)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    url = args.redis_url or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    try:
        variant = parse_variant(args.variant)
        client = make_client(url, variant, workers=REQUEST_THREADS)
        client.ping()
        queue = RedisQueue(client, variant, namespace=args.namespace)
    except (VariantError, ValueError) as exc:
        print(f"queue_impl.api: error: {exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(f"queue_impl.api: error: cannot reach Redis: {exc}", file=sys.stderr)
        return 1
    print(f"queue_impl.api: serving {variant.label()} on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(create_app(queue), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
