"""Locust event wiring: run settings, the run clock, histograms to the master, the results file.

- Every process installs its run settings when its test starts: the master (or the
  local process) from `--qbench-run` (`QBENCH_RUN`), a worker from the copy Locust
  forwards in its start message (a variant's run or a driver's alike).
- A worker adds its recorder's cumulative state to every `report_to_master` message
  (every 3 s, and once more when it quits); the master keeps each worker's latest in
  its `Collector` (`worker_report`).
- The master (or the local process) runs the clock instead of Locust's `--run-time`:
  a progress line every few seconds; at the end it asks each worker to quit, whose users
  then stop and whose last report (`final`) follows, and it waits for every worker's
  final report before quitting itself. Locust's own `--run-time` would kill the master
  half a second after telling the workers to quit, before a consumer blocked in a
  dequeue has finished and reported.
- A master that expects workers waits for them itself (`QBENCH_WORKER_WAIT_S`): a line
  every few seconds says how many have connected; at the bound it writes the error ("2 of
  3 workers connected") to the results file, tells the connected workers to exit 1
  (`ABORT_MESSAGE`), and exits 1. Locust's own bound exits in silence, its workers 0.
- While the run goes, the master checks each worker's state: one that stops sending
  heartbeats (its process died, its host went away) is named on the console, and the run
  stops at once and fails with that reason.
- On quitting, the master (or the local process) writes the merged results to
  `QBENCH_RESULTS_FILE`; a missing final report, or a worker that could not take part,
  is an error there and makes the process exit 1.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.rpc import Message
from locust.runners import STATE_MISSING, MasterRunner, Runner, WorkerRunner

from qbench.scenarios import settings as run_settings
from qbench.scenarios.progress import PREFIX, main_op, progress_line
from qbench.scenarios.recorder import RECORDER, REPORT_KEY, Collector, OpSamples, write_results_file
from qbench.scenarios.settings import RunSettingsError, RunSpec

logger = logging.getLogger("qbench")

FINAL_REPORT_GRACE_S = 15.0
"""After the stop timeout, how long the master waits for the workers' final reports."""
COLLECTOR = Collector()
ABORT_MESSAGE = "qbench_abort"
"""Master to workers: the run is off (the reason in the data); a worker exits 1."""
WAITING_EVERY_S = 5.0


class _State:
    spec: RunSpec | None = None
    error: str | None = None
    clock: gevent.Greenlet | None = None
    lost: list[str] = []
    """Workers that went missing while the run went (one line each)."""


STATE = _State()


def _add_options(parser: Any) -> None:
    parser.add_argument(
        "--qbench-run",
        dest=run_settings.LOCUST_OPTION,
        env_var=run_settings.ENV_RUN,
        default="",
        include_in_web_ui=False,
        help="the run spec qbench load passes (JSON); the master forwards it to its workers",
    )


def _on_init(environment: Environment, runner: Runner | None = None, **_kwargs: Any) -> None:
    if isinstance(runner, WorkerRunner):
        runner.register_message(ABORT_MESSAGE, _on_abort)
        return
    expected = getattr(environment.parsed_options, "expect_workers", 0) or 0
    wait_s = float(os.environ.get(run_settings.ENV_WORKER_WAIT_S) or 0)
    if isinstance(runner, MasterRunner) and expected and wait_s > 0:
        gevent.spawn(_wait_for_workers, environment, runner, expected, wait_s)


def _wait_for_workers(environment: Environment, runner: MasterRunner, expected: int, wait_s: float) -> None:
    """Until the test starts (every expected worker connected): a line every few seconds
    saying how many came; at `wait_s`, give up with one error naming them (exit 1)."""
    start = time.monotonic()
    next_line = start + WAITING_EVERY_S
    while STATE.spec is None:
        now = time.monotonic()
        connected = len(runner.clients.ready)
        if now - start >= wait_s:
            error = f"gave up waiting for workers after {wait_s:g} s: {connected} of {expected} connected"
            logger.error("%s", error)
            print(PREFIX + error, flush=True)
            for client in list(runner.clients.all):
                runner.send_message(ABORT_MESSAGE, {"reason": error}, client.id)
            results = os.environ.get(run_settings.ENV_RESULTS_FILE)
            if results:
                write_results_file(Path(results), ops={}, workers=COLLECTOR.summary(), errors=[error])
            gevent.sleep(0.5)  # the abort messages leave before the process does
            # Locust's own wait loop now gives up: it tells the workers to quit and exits 1.
            if environment.parsed_options is not None:
                environment.parsed_options.expect_workers_max_wait = 1e-9
            return
        if now >= next_line:
            print(f"{PREFIX}waiting for workers: {connected} of {expected} connected", flush=True)
            next_line += WAITING_EVERY_S
        gevent.sleep(0.5)


def _on_abort(environment: Environment, msg: Message, **_kwargs: Any) -> None:
    """The master gave up on the run: this worker says why and exits 1."""
    reason = msg.data.get("reason") if isinstance(msg.data, dict) else msg.data
    print(f"qbench worker: the master ended the run: {reason}", flush=True)
    environment.process_exit_code = 1
    if environment.runner is not None:
        gevent.spawn(environment.runner.quit)


def _on_test_start(environment: Environment, **_kwargs: Any) -> None:
    text = getattr(environment.parsed_options, run_settings.LOCUST_OPTION, "") or ""
    try:
        if not text:
            raise RunSettingsError("no run spec: start Locust through `qbench load`")
        spec = RunSpec.from_json(text)
        RECORDER.started_at = spec.started_at
        STATE.spec = spec
        run_settings.install(run_settings.resolve(spec))
    except RunSettingsError as exc:
        STATE.error = str(exc)
        logger.error("%s", exc)
        environment.process_exit_code = 1
    if isinstance(environment.runner, WorkerRunner) or STATE.clock is not None:
        return
    STATE.clock = gevent.spawn(_run_clock, environment)


def _on_test_stop(environment: Environment, **_kwargs: Any) -> None:
    if not isinstance(environment.runner, MasterRunner):
        RECORDER.stopped = True  # every user of this process has stopped: the next report is final


def _on_report_to_master(client_id: str, data: dict[str, Any], **_kwargs: Any) -> None:
    data[REPORT_KEY] = RECORDER.report(error=STATE.error)


def _on_worker_connect(client_id: str, **_kwargs: Any) -> None:
    COLLECTOR.expect(client_id)


def _on_worker_report(client_id: str, data: dict[str, Any], **_kwargs: Any) -> None:
    report = data.get(REPORT_KEY)
    if report is not None:
        COLLECTOR.receive(client_id, report)


def _on_quitting(environment: Environment, **_kwargs: Any) -> None:
    raw_dir = os.environ.get(run_settings.ENV_RAW_SAMPLES_DIR)
    if raw_dir:
        RECORDER.dump_raw(Path(raw_dir))
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        counts = ", ".join(f"{op} {s.count:,}" for op, s in sorted(RECORDER.ops.items())) or "no operations"
        print(
            f"qbench worker {runner.client_id}: sent {RECORDER.reports} report(s), the last "
            f"{'final' if RECORDER.stopped else 'NOT final'}: {counts}",
            flush=True,
        )
        return
    errors = _errors(environment)
    results = os.environ.get(run_settings.ENV_RESULTS_FILE)
    if results:
        if isinstance(runner, MasterRunner):
            ops, workers = COLLECTOR.merged(), COLLECTOR.summary()
            write_results_file(Path(results), ops=ops, workers=workers, errors=errors)
        else:
            write_results_file(Path(results), ops=RECORDER.ops, errors=errors)
    if errors:
        for error in errors:
            logger.error("%s", error)
        environment.process_exit_code = 1


def _errors(environment: Environment) -> list[str]:
    errors = [STATE.error] if STATE.error else []
    errors += STATE.lost
    if isinstance(environment.runner, MasterRunner):
        errors += COLLECTOR.errors
        if not COLLECTOR.workers:
            errors.append("no worker ever connected")
        errors += [
            f"worker {w}: its final report never reached the master "
            f"({COLLECTOR.workers[w].reports} report(s) received)"
            for w in COLLECTOR.missing_final()
        ]
    return errors


def _view(environment: Environment) -> tuple[dict[str, OpSamples], float | None]:
    """The run so far: merged operations, and up to when every process has reported."""
    if isinstance(environment.runner, MasterRunner):
        until = COLLECTOR.reported_until()
        return COLLECTOR.merged(), None if until is None else until - RECORDER.started_at
    return RECORDER.ops, time.time() - RECORDER.started_at


def _print_progress(environment: Environment, spec: RunSpec, elapsed_s: float) -> None:
    ops, reported_s = _view(environment)
    line = progress_line(
        elapsed_s=elapsed_s,
        total_s=spec.duration_s,
        users=environment.runner.user_count if environment.runner else 0,
        ops=ops,
        op=main_op(spec.workload),
        reported_s=reported_s,
    )
    print(PREFIX + line, flush=True)


def _run_clock(environment: Environment) -> None:
    """Run for the spec's duration (progress on the way), then stop every process cleanly."""
    runner = environment.runner
    assert runner is not None
    spec = STATE.spec
    if spec is not None:
        start = time.monotonic()
        next_progress = start + spec.progress_every_s
        while not STATE.error and not COLLECTOR.errors and not STATE.lost:
            now = time.monotonic()
            if isinstance(runner, MasterRunner):
                _check_workers(runner, now - start)
                if STATE.lost:
                    break
            if now >= start + spec.duration_s:
                _print_progress(environment, spec, spec.duration_s)
                break
            if now >= next_progress:
                _print_progress(environment, spec, now - start)
                next_progress += spec.progress_every_s
            gevent.sleep(min(1.0, start + spec.duration_s - now, max(next_progress - now, 0.05)))
    if isinstance(runner, MasterRunner):
        _quit_workers(runner, environment.stop_timeout or 0.0)
    runner.quit()


def _check_workers(runner: MasterRunner, elapsed_s: float) -> None:
    """Name each worker that stopped sending heartbeats (Locust marks it missing after a
    few seconds): its samples stop arriving, so the run cannot be whole."""
    for client in runner.clients.missing:
        line = (
            f"worker {client.id} went missing at {elapsed_s:.0f} s: no heartbeat "
            "(its Locust process died or its host is unreachable); the run stops"
        )
        if line not in STATE.lost and not any(client.id in known for known in STATE.lost):
            STATE.lost.append(line)
            print(PREFIX + line, flush=True)


def _quit_workers(runner: MasterRunner, stop_timeout: float) -> None:
    """Ask every worker to quit: its users stop (within the stop timeout) and its final
    report follows. Wait for all of them; a worker that never sends one is an error."""
    for client in list(runner.clients.all):
        runner.send_message("quit", None, client.id)
    deadline = time.monotonic() + stop_timeout + FINAL_REPORT_GRACE_S
    while _awaited(runner) and time.monotonic() < deadline:
        gevent.sleep(0.2)
    if COLLECTOR.missing_final():
        print(f"qbench: no final report from {', '.join(COLLECTOR.missing_final())}", file=sys.stderr)


def _awaited(runner: MasterRunner) -> list[str]:
    """Workers whose final report is still to come: those Locust still counts as connected
    (one that quit or stopped sending heartbeats will send nothing more)."""
    return [
        w
        for w in COLLECTOR.missing_final()
        if (client := runner.clients.get(w)) is not None and client.state != STATE_MISSING
    ]


for _hook, _listener in (
    (events.init_command_line_parser, _add_options),
    (events.init, _on_init),
    (events.test_start, _on_test_start),
    (events.test_stop, _on_test_stop),
    (events.report_to_master, _on_report_to_master),
    (events.worker_connect, _on_worker_connect),
    (events.worker_report, _on_worker_report),
    (events.quitting, _on_quitting),
):
    _hook.add_listener(_listener)  # type: ignore[no-untyped-call]
