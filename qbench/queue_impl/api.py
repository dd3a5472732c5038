"""Job submission HTTP API: `python -m qbench.queue_impl.api` (FastAPI on uvicorn, 127.0.0.1 by default).

Submissions are async and coalesced: every job submitted while one `enqueue_many` is on
its way to Redis goes out together in the next one (what auto-pipelining clients do),
so under load one round trip carries many jobs, and the event loop never waits on
Redis. `--processes N` runs N uvicorn worker processes on one port.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Literal

import redis
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from qbench.queue_impl.job import Job, Priority
from qbench.queue_impl.queue import PayloadTooLargeError, RedisQueue
from qbench.queue_impl.service import ServiceArgumentParser, add_queue_arguments, open_queue, positive_int_arg

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
REQUEST_THREADS = 40
"""Starlette runs sync endpoints (the reads) on AnyIO's pool of 40 threads: the Redis pool's size."""
MAX_BATCH = 256
"""Most submissions one coalesced `enqueue_many` carries."""
ARGS_ENV = "QBENCH_API_ARGS"
"""How `--processes N` hands the flags to each uvicorn worker process (JSON)."""


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


class SubmissionBatcher:
    """Coalesces concurrent submissions into one `enqueue_many` per round trip.

    The event loop queues each job and awaits its future; one flusher at a time sends
    everything pending (up to `max_batch`) from a single thread, since redis-py is sync.
    A job's future resolves only once Redis has it: a 201 means written. When a batch
    fails, every job in it fails (the caller was not told "created", so it can retry).
    """

    def __init__(self, queue: RedisQueue, *, max_batch: int = MAX_BATCH) -> None:
        self.queue = queue
        self.max_batch = max_batch
        self.batches = 0
        self.jobs = 0
        self._pending: list[tuple[Job, asyncio.Future[str]]] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qbench-enqueue")

    async def submit(self, job: Job) -> str:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        self._pending.append((job, future))
        if not self._flushing:
            self._flushing = True
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                jobs = [job for job, _ in batch]
                try:
                    await loop.run_in_executor(self._executor, self.queue.enqueue_many, jobs)
                except Exception as exc:  # every waiter gets the error; none is told "created"
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self.batches += 1
                self.jobs += len(jobs)
                for job, future in batch:
                    if not future.done():
                        future.set_result(job.id)
        finally:
            self._flushing = False

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def create_app(queue: RedisQueue) -> FastAPI:
    """The API over `queue`: async, coalesced submissions; reads run on threads."""
    app = FastAPI(title="qbench submission API", version="1")
    batcher = SubmissionBatcher(queue)
    app.state.batcher = batcher

    @app.exception_handler(redis.RedisError)
    def redis_unavailable(_request: Request, exc: redis.RedisError) -> JSONResponse:
        # Nothing was lost: the caller was not told "created", so it can retry.
        return JSONResponse(status_code=503, content={"detail": f"Redis unavailable: {exc}"})

    @app.post("/jobs", status_code=201, response_model=SubmitResponse)
    async def submit(request: SubmitRequest) -> Response:
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
            queue.check_payloads([job])  # here, per job: a coalesced batch is all or nothing
        except PayloadTooLargeError as exc:
            raise HTTPException(status_code=413, detail=str(exc)) from None
        job_id = await batcher.submit(job)
        # Written by hand: the id is plain text, and this is the hot path.
        return Response(
            content=b'{"id":"%s"}' % job_id.encode(), status_code=201, media_type="application/json"
        )

    @app.get("/metrics/batching")
    def batching() -> dict[str, float]:
        """How many submissions each round trip carried (this process)."""
        mean = batcher.jobs / batcher.batches if batcher.batches else 0.0
        return {"batches": batcher.batches, "jobs": batcher.jobs, "jobs_per_batch": mean}

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
    parser = ServiceArgumentParser(prog="python -m qbench.queue_impl.api", description=__doc__)
    add_queue_arguments(parser)
    parser.add_argument("--host", default=DEFAULT_HOST, help="bind address (default: %(default)s)")
    parser.add_argument("--port", type=positive_int_arg, default=DEFAULT_PORT, help="default: %(default)s")
    parser.add_argument(
        "--processes",
        type=positive_int_arg,
        default=1,
        help="uvicorn worker processes sharing the port (default: %(default)s)",
    )
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def app_from_env() -> FastAPI:
    """The app of one `--processes` worker: the flags come from `ARGS_ENV`."""
    args = argparse.Namespace(**json.loads(os.environ[ARGS_ENV]))
    return create_app(open_queue(args, workers=REQUEST_THREADS))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    queue = open_queue(args, workers=REQUEST_THREADS)  # one-line errors before uvicorn starts
    print(
        f"qbench.queue_impl.api: serving {queue.variant.label()} on http://{args.host}:{args.port} "
        f"({args.processes} process{'es' if args.processes > 1 else ''})",
        flush=True,
    )
    common: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_level": "warning",
        "access_log": False,
    }
    if args.processes == 1:
        uvicorn.run(create_app(queue), **common)
        return 0
    queue.client.close()
    os.environ[ARGS_ENV] = json.dumps(vars(args))
    uvicorn.run("qbench.queue_impl.api:app_from_env", factory=True, workers=args.processes, **common)
    return 0


if __name__ == "__main__":
    sys.exit(main())
