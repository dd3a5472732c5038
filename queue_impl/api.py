"""Job submission HTTP API: `python -m queue_impl.api` (FastAPI on uvicorn, 127.0.0.1 by default)."""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import redis
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from queue_impl.job import Job, Priority
from queue_impl.queue import PayloadTooLargeError, RedisQueue
from queue_impl.service import ServiceArgumentParser, add_queue_arguments, open_queue, positive_int_arg

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
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

    @app.exception_handler(redis.RedisError)
    def redis_unavailable(_request: Request, exc: redis.RedisError) -> JSONResponse:
        # Nothing was lost: the caller was not told "created", so it can retry.
        return JSONResponse(status_code=503, content={"detail": f"Redis unavailable: {exc}"})

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
        try:
            return SubmitResponse(id=queue.enqueue(job))
        except PayloadTooLargeError as exc:
            raise HTTPException(status_code=413, detail=str(exc)) from None

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


def build_parser() -> argparse.ArgumentParser:
    parser = ServiceArgumentParser(prog="python -m queue_impl.api", description=__doc__)
    add_queue_arguments(parser)
    parser.add_argument("--host", default=DEFAULT_HOST, help="bind address (default: %(default)s)")
    parser.add_argument("--port", type=positive_int_arg, default=DEFAULT_PORT, help="default: %(default)s")
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    queue = open_queue(args, workers=REQUEST_THREADS)
    print(f"queue_impl.api: serving {queue.variant.label()} on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(create_app(queue), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
