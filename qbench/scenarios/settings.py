"""Run-time settings of a Locust process: what `qbench load` tells it, and what the master tells its workers.

The master (or the one local process) gets the whole run spec from `qbench load` in
`QBENCH_RUN` (JSON: workload shape, variant or driver, Redis URL, namespace, time origin,
duration).
Locust hands it to every worker with its start message (it is a custom Locust option,
`--qbench-run`), so a worker on another host learns the run from the master alone; a
worker's own environment only says which scenario and variant it was started for (checked
against the master's) and, optionally, a Redis URL reachable from its host.

A driver run (`qbench load --driver`) travels the same way (`RunSpec.driver`); a worker
started by hand on another host for it (`qbench load --worker --driver X`) has built the
driver's environment on its own host and says where (`ENV_DRIVER_*`).

Kept apart from `qbench.scenarios.users` so the harness can name these without importing
Locust (whose gevent monkey-patching must stay out of the harness process).
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from qbench.queue_impl.config import Variant, VariantError, parse_variant
from qbench.scenarios.workload import USER_KIND_TABLE, Workload, WorkloadError, load_workload, parse_workload

ENV_RUN = "QBENCH_RUN"
"""The run spec (JSON), for the master or the local process (and local workers)."""
ENV_WORKLOAD = "QBENCH_WORKLOAD"
"""A worker's scenario (name or .toml path): its user classes, checked against the master's."""
ENV_VARIANT = "QBENCH_VARIANT"
"""A worker's variant, checked against the master's."""
ENV_REDIS_URL = "QBENCH_REDIS_URL"
"""This process's Redis URL; a worker without one uses the URL the master announces."""
ENV_MASTER_HOST = "QBENCH_MASTER_HOST"
"""The master's address as a worker dials it (a loopback Redis URL is useless elsewhere)."""
ENV_RESULTS_FILE = "QBENCH_RESULTS_FILE"
"""Where the master (or the local process) writes the merged results at the end."""
ENV_DRIVER = "QBENCH_DRIVER"
"""A worker started by hand for a driver run: the driver's name, checked against the master's."""
ENV_DRIVER_PYTHON = "QBENCH_DRIVER_PYTHON"
"""That worker's own interpreter for the driver (its host built the driver's environment)."""
ENV_DRIVER_PYTHONPATH = "QBENCH_DRIVER_PYTHONPATH"
"""That worker's PYTHONPATH for the driver's agents."""
ENV_DRIVER_LOG = "QBENCH_DRIVER_LOG"
"""That worker's file for its agents' stderr."""
ENV_WORKER_WAIT_S = "QBENCH_WORKER_WAIT_S"
"""A master's bound on its wait for the expected workers (seconds): it waits itself, saying
how many came, and gives up with one error naming them (Locust's own bound exits in silence)."""
ENV_RAW_SAMPLES_DIR = "QBENCH_RAW_SAMPLES_DIR"
"""Optional: each process also writes its raw latency samples there (a test aid)."""
LOCUST_OPTION = "qbench_run"
"""`environment.parsed_options.qbench_run`: the spec as Locust forwards it to workers."""


class RunSettingsError(RuntimeError):
    """A Locust process that cannot take part in the run (one line)."""


@dataclass(frozen=True, kw_only=True)
class DriverRun:
    """A run through a driver (`qbench load --driver`): what a Locust process needs to start
    the driver's producer agents. The paths are the harness host's: such a run keeps its
    Locust processes on that host."""

    name: str
    ref: str
    """What the driver's agent loads (`module:Class`, `/path/file.py:Class`, `/path/driver.toml`)."""
    python: str
    """The interpreter of the driver's environment."""
    pythonpath: str
    """PYTHONPATH of the driver's agents (links to qbench, harness and the driver's package)."""
    log: str
    """File the agents' stderr is appended to."""
    priorities: bool
    """True when users send each job with a priority drawn from the workload's mix."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ref": self.ref,
            "python": self.python,
            "pythonpath": self.pythonpath,
            "log": self.log,
            "priorities": self.priorities,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> DriverRun:
        return cls(
            name=str(doc["name"]),
            ref=str(doc["ref"]),
            python=str(doc["python"]),
            pythonpath=str(doc["pythonpath"]),
            log=str(doc["log"]),
            priorities=bool(doc["priorities"]),
        )


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """What every process of one run must agree on; the master sends it to its workers.
    Exactly one of `variant` (users over the reference queue) and `driver` is set."""

    workload: Workload
    variant: str | None = None
    """`preset+toggle=value,...` (parse_variant turns it back into the Variant)."""
    driver: DriverRun | None = None
    redis_url: str
    namespace: str
    started_at: float
    """Wall-clock seconds when `qbench load` started Locust: the origin of per-second counts."""
    duration_s: float
    progress_every_s: float = 5.0

    def __post_init__(self) -> None:
        if (self.variant is None) == (self.driver is None):
            raise ValueError("a run spec names exactly one of a variant and a driver")

    def to_json(self) -> str:
        return json.dumps(
            {
                "workload": self.workload.as_dict(),
                "variant": self.variant,
                "driver": None if self.driver is None else self.driver.as_dict(),
                "redis_url": self.redis_url,
                "namespace": self.namespace,
                "started_at": self.started_at,
                "duration_s": self.duration_s,
                "progress_every_s": self.progress_every_s,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        try:
            doc: dict[str, Any] = json.loads(text)
            workload_doc = dict(doc["workload"])
            name = str(workload_doc.pop("name"))
            driver = doc.get("driver")
            return cls(
                workload=parse_workload(workload_doc, name=name, source=f"run spec {name}"),
                variant=None if doc.get("variant") is None else str(doc["variant"]),
                driver=None if driver is None else DriverRun.from_dict(dict(driver)),
                redis_url=str(doc["redis_url"]),
                namespace=str(doc["namespace"]),
                started_at=float(doc["started_at"]),
                duration_s=float(doc["duration_s"]),
                progress_every_s=float(doc["progress_every_s"]),
            )
        except (ValueError, KeyError, TypeError, WorkloadError) as exc:
            raise RunSettingsError(f"unreadable run spec from the master: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """One Locust process's share of the run: the workload, what executes an operation
    (a variant of the reference queue in this process, or a driver's agents) and where."""

    workload: Workload
    variant: Variant | None
    """Set for `--variant` runs: the reference queue, in-process (the preset driver's queue)."""
    driver: DriverRun | None
    """Set for `--driver` runs, with this host's environment for the driver's agents."""
    redis_url: str
    namespace: str
    started_at: float

    @property
    def log(self) -> Path:
        """Where the driver's agents' stderr goes."""
        return Path(self.driver.log if self.driver is not None and self.driver.log else os.devnull)


_installed: RunSettings | None = None


def settings() -> RunSettings:
    """This process's run settings (installed when its test starts)."""
    if _installed is None:
        raise RuntimeError("run through `qbench load` (no run settings: the test has not started)")
    return _installed


def installed() -> bool:
    """Whether this process has its run settings (a worker that refused the run has none)."""
    return _installed is not None


def install(settings_: RunSettings) -> RunSettings:
    global _installed
    _installed = settings_
    return settings_


def import_workload(env: dict[str, str] | None = None) -> Workload:
    """The workload whose user classes this process defines when Locust imports the
    locustfile: the run spec's (master, local process, local worker) or the worker's own
    scenario (`qbench load --worker`)."""
    env = dict(os.environ) if env is None else env
    if env.get(ENV_RUN):
        return RunSpec.from_json(env[ENV_RUN]).workload
    if env.get(ENV_WORKLOAD):
        return load_workload(env[ENV_WORKLOAD])
    raise RuntimeError(f"run through `qbench load` (neither {ENV_RUN} nor {ENV_WORKLOAD} is set)")


def resolve(spec: RunSpec, env: dict[str, str] | None = None) -> RunSettings:
    """This process's settings for `spec`: its own Redis URL when it has one, and for a
    driver run started by hand on another host (`qbench load --worker --driver X`), its own
    environment for the driver. Raises RunSettingsError when a worker was started for
    another scenario, variant or driver than the master's, or would dial the master's
    loopback Redis from another host."""
    env = dict(os.environ) if env is None else env
    by_hand = bool(env.get(ENV_WORKLOAD)) and not env.get(ENV_RUN)
    own_driver = env.get(ENV_DRIVER)
    variant: Variant | None = None
    driver = spec.driver
    if spec.variant is not None:
        try:
            variant = parse_variant(spec.variant)
        except VariantError as exc:
            raise RunSettingsError(f"the master's variant {spec.variant!r}: {exc}") from None
        if own_driver:
            raise RunSettingsError(
                f"this worker was started for driver {own_driver}, the master runs variant {variant.label()}"
            )
        if env.get(ENV_VARIANT):
            try:
                own = parse_variant(env[ENV_VARIANT]).label()
            except VariantError as exc:
                raise RunSettingsError(f"--variant {env[ENV_VARIANT]!r}: {exc}") from None
            if own != variant.label():
                raise RunSettingsError(
                    f"this worker was started for variant {own}, the master runs {variant.label()}"
                )
    else:
        assert driver is not None  # a spec names exactly one
        if env.get(ENV_VARIANT):
            raise RunSettingsError(
                f"this worker was started for variant {env[ENV_VARIANT]}, "
                f"the master runs driver {driver.name}"
            )
        if own_driver and own_driver != driver.name:
            raise RunSettingsError(
                f"this worker was started for driver {own_driver}, the master runs driver {driver.name}"
            )
        if by_hand and not own_driver:
            raise RunSettingsError(f"the master runs driver {driver.name}: start this worker with --driver")
        if own_driver:
            # The master's paths are its host's: the agents run in the environment this host built.
            driver = replace(
                driver,
                python=env[ENV_DRIVER_PYTHON],
                pythonpath=env[ENV_DRIVER_PYTHONPATH],
                log=env.get(ENV_DRIVER_LOG, ""),
            )
    if by_hand:
        mine = load_workload(env[ENV_WORKLOAD])
        theirs = _kinds(spec.workload)
        kinds = _kinds(mine) if driver is None else {k for k in _kinds(mine) if _driver_calls(k)}
        if mine.name != spec.workload.name or kinds != theirs:
            raise RunSettingsError(
                f"this worker was started for scenario {mine.name}, the master runs {spec.workload.name}"
            )
    return RunSettings(
        workload=spec.workload,
        variant=variant,
        driver=driver,
        redis_url=redis_url_for(spec, env),
        namespace=spec.namespace,
        started_at=spec.started_at,
    )


def _driver_calls(kind: str) -> bool:
    return USER_KIND_TABLE[kind].driver_role == "calls"


def redis_url_for(spec: RunSpec, env: dict[str, str]) -> str:
    """This process's Redis URL: its own when it has one, else the master's. Raises
    RunSettingsError for a worker that would dial the master's loopback from another host."""
    url = env.get(ENV_REDIS_URL) or spec.redis_url
    master_host = env.get(ENV_MASTER_HOST)
    if (
        not env.get(ENV_REDIS_URL)
        and master_host
        and is_loopback(urlsplit(url).hostname or "")
        and not (is_loopback(master_host))
    ):
        raise RunSettingsError(
            f"the master's Redis ({url}) is on the master's loopback, out of this host's reach: "
            "start the worker with --redis-url pointing at an address it can reach"
        )
    return url


def _kinds(workload: Workload) -> set[str]:
    return {kind for kind, weight in workload.user_mix.items() if weight > 0}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def without_credentials(url: str) -> str:
    """`url` with any user and password removed: what the master may announce to workers."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, v) for k, v in pairs if k not in ("username", "password")]
    if "@" not in parts.netloc and len(query) == len(pairs):
        return url
    text = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    return text + (f"?{urlencode(query)}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
