"""Telemetry: what Redis and the harness's own processes do, sampled beside any run.

    with Telemetry(server.url, out_dir) as t:      # or a list of node URLs (a cluster's nodes)
        ...the run...
    t.summary.cost_commands_per_s                  # what the sampling itself cost Redis

A background thread reads `INFO` (one command per node per sample, on a connection of its
own) every `interval_s` seconds (1 s by default), reads /proc for the CPU and RSS of this
process and of every registered pid, and appends tidy rows to `telemetry.csv` (flushed
after each sample, so a run that crashes keeps what was sampled). Leaving the block takes
one last sample, so every command sent inside the block is in the rows.

telemetry.csv columns: `t,source,node,metric,value,unit`
    t       seconds since the sampler started, at the start of the sampling round (every
            row of one round, all nodes and processes, carries the same t; the first round
            is t=0); a delta row covers that node's last `interval_s` seconds up to its
            INFO reply in this round
    source  `redis` (INFO of a node), `harness` (a process of the harness), `telemetry`
            (the sampler's own cost)
    node    `host:port` of the Redis node (`unix:/path` for a socket); for `harness`,
            `<name>:<pid>`, or `all` for the sum over the harness's processes

source=redis, every sample (gauges):
    used_memory_bytes, used_memory_rss_bytes   bytes
    mem_fragmentation_ratio                    ratio
    connected_clients                          clients, the sampler's own connection left out
    blocked_clients                            clients
    keys:db<N>, expires:db<N>                  keys (expires: keys with a TTL), per logical db
source=redis, every sample after the first (over the interval ending at t):
    interval_s                                 s
    commands, commands_per_s                   commands, commands/s: total_commands_processed
                                               delta (on Redis 7+ commands run inside scripts
                                               count too)
    calls:<cmd>, calls_per_s:<cmd>             calls, calls/s: INFO commandstats delta per
                                               command (lower case, `container|sub` as Redis
                                               names them, e.g. `calls:memory|usage`); only
                                               commands called in the interval get a row
    instantaneous_ops_per_s                    ops/s: Redis's own estimate (a ~1.6 s moving
                                               average) minus the sampler's average rate; approximate
    expired_keys, evicted_keys                 keys expired / evicted in the interval
    cpu_user_s_per_s, cpu_sys_s_per_s, cpu_s_per_s   cpu_s/s: redis-server's used_cpu_* deltas
source=harness, per process (and node=all, their sum):
    rss_bytes                                  bytes, every sample
    cpu_s_per_s                                cpu_s/s, user + system, after the first sample
source=telemetry, per node:
    own_commands, own_commands_per_s           commands, commands/s the sampler (and anything
                                               sharing its connection, e.g. observe's SCAN)
                                               sent in the interval: already subtracted from
                                               every `commands*` and `calls*` figure above
    restarts                                   count: the node restarted (new run_id, counters
                                               went back); deltas restart from that sample
    sample_errors                              count: the node could not be read this round
                                               (its next delta row spans the gap)
    and once, at the end: telemetry_commands (commands), telemetry_cost_commands_per_s
    (commands/s), samples and sample_errors (count, node=all).

How the subtraction is exact: every command the sampler's connection writes (its
handshake too) is counted by name as it is sent; INFO reports the server's counters
without itself, so the own commands inside an interval are exactly those sent between
the two INFO calls that bound it (the first INFO included, the second not). Figures from
`qbench.harness.infra.counting` stay exact beside the sampler: they leave `info` out.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import redis

from qbench.harness.infra.budget import TokenBucket
from qbench.harness.infra.nodelink import NodeLink, node_label
from qbench.harness.infra.procstat import ProcSample, children_of, read_proc
from qbench.queue_impl.connection import redact_url
from qbench.queue_impl.service import explain_redis_error

TELEMETRY_FILE = "telemetry.csv"
COLUMNS = ("t", "source", "node", "metric", "value", "unit")
DEFAULT_INTERVAL_S = 1.0
MIN_INTERVAL_S = 0.05
INFO_SECTIONS = ("server", "clients", "memory", "stats", "cpu", "keyspace", "commandstats")
"""Read with one INFO call per sample (Redis 7+); older servers get `INFO all`, also one call."""
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class TelemetryError(RuntimeError):
    """A node could not be sampled when the sampler started (unreachable, INFO refused)."""


@dataclass(frozen=True, slots=True)
class TelemetryRow:
    """One sampled number (see the module docstring for the metrics)."""

    t: float
    source: str
    node: str
    metric: str
    value: float
    unit: str

    def as_csv(self) -> list[str]:
        return [_fmt(self.t), self.source, self.node, self.metric, _fmt(self.value), self.unit]


def _fmt(value: float) -> str:
    if math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return repr(round(value, 6))


def read_telemetry(path: Path) -> list[TelemetryRow]:
    """Rows of a `telemetry.csv`; raises ValueError (one line) if it is not one."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or tuple(reader.fieldnames) != COLUMNS:
            raise ValueError(f"{path}: not a qbench telemetry.csv (columns {reader.fieldnames})")
        try:
            return [
                TelemetryRow(float(r["t"]), r["source"], r["node"], r["metric"], float(r["value"]), r["unit"])
                for r in reader
            ]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: bad row ({exc})") from None


# -- the sampler ------------------------------------------------------------------------------------
@dataclass
class TelemetrySummary:
    """What was sampled, and what sampling cost each node."""

    interval_s: float
    samples: int = 0
    duration_s: float = 0.0
    sample_errors: int = 0
    restarts: int = 0
    own_commands: dict[str, int] = field(default_factory=dict)
    """Per node: every command the sampler's connection sent (handshake included)."""
    own_commands_by_name: dict[str, dict[str, int]] = field(default_factory=dict)
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per node: version, allocator, maxmemory, policy, hz, process id (first sample)."""
    last_error: str = ""

    @property
    def cost_commands_per_s(self) -> float:
        """Commands per second the sampling added to Redis, all nodes together."""
        total = sum(self.own_commands.values())
        return total / self.duration_s if self.duration_s > 0 else float(total)

    telemetry_cost = cost_commands_per_s

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cost_commands_per_s"] = self.cost_commands_per_s
        return data


@dataclass
class _NodeState:
    link: NodeLink
    prev: dict[str, Any] | None = None
    prev_own: Counter[str] = field(default_factory=Counter)
    prev_read: float = 0.0
    dbs: set[str] = field(default_factory=set)


@dataclass
class _ProcState:
    name: str
    prev_cpu_s: float | None = None
    prev_read: float = 0.0


class Telemetry(AbstractContextManager["Telemetry"]):
    """Samples Redis nodes and the harness's processes in a background thread.

    `nodes`: one Redis URL or several (each node of a cluster). `out_dir`: where
    `telemetry.csv` goes (None: rows are only kept in `rows`). `processes`: pids (or
    `(pid, name)` pairs) to sample beside this process; `add_process` registers more
    later. `follow_children`: also sample every descendant of the registered processes
    (redis-server processes of the sampled nodes are never counted as the harness's).
    `budget` / `allowed` are passed to every node's link (see `NodeLink`). `self_name`
    names this process in the `harness` rows.

    Entering takes the first sample and raises `TelemetryError` (one line) when a node
    cannot be read; later failures are counted (`sample_errors`) and sampling goes on.
    """

    def __init__(
        self,
        nodes: str | Sequence[str],
        out_dir: Path | None = None,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        processes: Iterable[int | tuple[int, str]] = (),
        follow_children: bool = False,
        budget: TokenBucket | None = None,
        allowed: frozenset[str] | None = None,
        file_name: str = TELEMETRY_FILE,
        self_name: str = "harness",
        jitter: bool = False,
    ) -> None:
        urls = [nodes] if isinstance(nodes, str) else list(nodes)
        if not urls:
            raise ValueError("Telemetry needs at least one Redis node")
        if interval_s < MIN_INTERVAL_S:
            raise ValueError(f"interval_s must be >= {MIN_INTERVAL_S}, got {interval_s}")
        self.urls = urls
        self.interval_s = float(interval_s)
        self.path = out_dir / file_name if out_dir is not None else None
        self.follow_children = follow_children
        self._budget = budget
        self._allowed = allowed
        self.links: list[NodeLink] = []
        self._nodes: list[_NodeState] = []
        self._procs: dict[int, _ProcState] = {os.getpid(): _ProcState(self_name)}
        self._procs_lock = threading.Lock()
        self._sections: tuple[str, ...] = INFO_SECTIONS
        for item in processes:
            pid, name = item if isinstance(item, tuple) else (item, None)
            self.add_process(pid, name)
        self._server_pids: set[int] = set()
        self.rows: list[TelemetryRow] = []
        self.summary = TelemetrySummary(interval_s=self.interval_s)
        self._sample_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fh: IO[str] | None = None
        self._writer: Any = None
        self._t0 = 0.0
        self._last_sample = 0.0
        self._end_at_s: float | None = None
        # Jitter: each round at a random point of its slot, so a gauge is not read in lock-step
        # with a periodic client (every phase of its cycle equally likely); seeded, deltas stay exact.
        self._jitter = random.Random(0) if jitter else None

    # -- registration ---------------------------------------------------------------------------
    def add_process(self, pid: int, name: str | None = None) -> None:
        """Sample `pid` from the next sample on (name: its /proc comm unless given)."""
        if name is None:
            found = read_proc(pid)
            name = found.name if found else "process"
        with self._procs_lock:
            self._procs.setdefault(pid, _ProcState(name))

    def link(self, node: str | None = None) -> NodeLink:
        """The counted link of a node (`host:port`; the first node when None)."""
        for link in self.links:
            if node is None or link.name == node:
                return link
        raise KeyError(node)

    # -- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> Telemetry:
        names = [node_label(url) for url in self.urls]
        if len(set(names)) != len(names):
            raise ValueError(f"the same node given twice: {', '.join(names)}")
        for url in self.urls:
            link = NodeLink(url, budget=self._budget, allowed=self._allowed)
            self.links.append(link)
            self._nodes.append(_NodeState(link))
        self._t0 = time.monotonic()
        try:
            for state in self._nodes:
                self._first_sample(state, 0.0)
        except BaseException:
            self._close_links()
            raise
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("w", newline="")
            self._writer = csv.writer(self._fh, lineterminator="\n")
            self._writer.writerow(COLUMNS)
        pending, self.rows = self.rows, []
        self._emit(pending)
        self._emit(self._sample_processes(0.0))
        self.summary.samples = 1
        self._last_sample = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="qbench-telemetry", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, *, at_s: float | None = None) -> None:
        """Stop the thread, take the last sample, write the cost rows, close everything.

        `at_s`: take the last sample at that many seconds since the start (a fixed
        window); by default at once, but at least half an interval (or 0.5 s) after the
        previous one, so its rates are not a spike over a few milliseconds.
        """
        if self._thread is None:
            return
        if at_s is not None and self._t0 + at_s > time.monotonic():
            self._end_at_s = at_s  # the loop keeps sampling every slot before at_s, then ends
        else:
            self._stop.set()
        self._thread.join()
        self._thread = None
        if at_s is not None:
            wait = self._t0 + at_s - time.monotonic()
        else:
            wait = min(self.interval_s / 2, 0.5) - (time.monotonic() - self._last_sample)
        if wait > 0:
            time.sleep(wait)
        self._sample_all()
        self._emit(self._cost_rows())
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._close_links()

    def _close_links(self) -> None:
        for link in self.links:
            with contextlib.suppress(redis.RedisError, OSError):
                link.close()

    def _loop(self) -> None:
        k = 1
        while not self._stop.wait(max(0.0, self._slot_time(k) - time.monotonic())):
            if self._end_at_s is not None and k * self.interval_s >= self._end_at_s - 1e-6:
                return  # close(at_s=...) takes this last sample itself
            self._sample_all()
            # Slots missed on a busy machine are skipped, not bunched up.
            k = max(k + 1, math.floor((time.monotonic() - self._t0) / self.interval_s) + 1)

    def _slot_time(self, k: int) -> float:
        if self._jitter is None:
            return self._t0 + k * self.interval_s
        at = self._t0 + (k + self._jitter.uniform(-0.5, 0.5)) * self.interval_s
        return max(at, self._last_sample + 0.1 * self.interval_s)

    def elapsed_s(self) -> float:
        """Seconds since the sampler started: the `t` axis of its rows."""
        return self._now()

    # -- sampling ---------------------------------------------------------------------------------
    def _now(self) -> float:
        return time.monotonic() - self._t0

    def _first_sample(self, state: _NodeState, t: float) -> None:
        link = state.link
        try:
            info, own = link.info(INFO_SECTIONS)
        except redis.ResponseError as exc:
            if "syntax" not in str(exc).lower() and "wrong number" not in str(exc).lower():
                raise TelemetryError(
                    f"cannot read INFO from {link.name}: {explain_redis_error(exc)}"
                ) from None
            info, own = link.info(("all",))  # Redis < 7: one section per call
            self._sections = ("all",)
        except (redis.RedisError, OSError) as exc:
            raise TelemetryError(
                f"cannot reach Redis at {redact_url(link.url)}: {explain_redis_error(exc)}"
                if isinstance(exc, redis.RedisError)
                else f"cannot reach Redis at {redact_url(link.url)}: {exc}"
            ) from None
        state.prev, state.prev_own, state.prev_read = info, own, self._now()
        self.summary.servers[link.name] = _server_facts(info)
        if link.name.split(":")[0] in LOOPBACK_HOSTS or link.name.startswith("unix:"):
            with contextlib.suppress(TypeError, ValueError):
                self._server_pids.add(int(info.get("process_id", 0)))
        self.rows += self._gauge_rows(t, link.name, info, state)

    def _sample_all(self) -> None:
        with self._sample_lock:
            t = self._now()  # every row of one round carries the round's t
            rows: list[TelemetryRow] = []
            for state in self._nodes:
                try:
                    info, own = state.link.info(self._sections)
                except (redis.RedisError, OSError) as exc:
                    self.summary.sample_errors += 1
                    self.summary.last_error = f"{state.link.name}: {exc}".splitlines()[0]
                    rows.append(TelemetryRow(t, "telemetry", state.link.name, "sample_errors", 1, "count"))
                    continue
                rows += self._node_rows(t, state, info, own, read_at=self._now())
            rows += self._sample_processes(t)
            self.summary.samples += 1
            self.summary.duration_s = self._now()
            self._last_sample = time.monotonic()
            self._emit(rows)

    def _emit(self, rows: list[TelemetryRow]) -> None:
        self.rows += rows
        if self._writer is not None and self._fh is not None:
            self._writer.writerows(row.as_csv() for row in rows)
            self._fh.flush()

    def _gauge_rows(
        self, t: float, node: str, info: Mapping[str, Any], state: _NodeState
    ) -> list[TelemetryRow]:
        def row(metric: str, value: float, unit: str) -> TelemetryRow:
            return TelemetryRow(t, "redis", node, metric, value, unit)

        rows = [
            row("used_memory_bytes", _num(info, "used_memory"), "bytes"),
            row("used_memory_rss_bytes", _num(info, "used_memory_rss"), "bytes"),
            row("mem_fragmentation_ratio", _num(info, "mem_fragmentation_ratio"), "ratio"),
            # The sampler's own connection is one of the connected clients.
            row("connected_clients", max(0.0, _num(info, "connected_clients") - 1), "clients"),
            row("blocked_clients", _num(info, "blocked_clients"), "clients"),
        ]
        keyspace = {
            k: v for k, v in info.items() if k.startswith("db") and k[2:].isdigit() and isinstance(v, dict)
        }
        state.dbs |= set(keyspace)
        for db in sorted(state.dbs, key=lambda name: int(name[2:])):
            stats = keyspace.get(db, {})
            rows.append(row(f"keys:{db}", float(stats.get("keys", 0)), "keys"))
            rows.append(row(f"expires:{db}", float(stats.get("expires", 0)), "keys"))
        return rows

    def _node_rows(
        self, t: float, state: _NodeState, info: dict[str, Any], own_before: Counter[str], *, read_at: float
    ) -> list[TelemetryRow]:
        node = state.link.name
        prev = state.prev
        own = own_before - state.prev_own
        own_total = sum(own.values())
        dt = read_at - state.prev_read  # between this node's own INFO replies
        state.prev_own = own_before
        rows = self._gauge_rows(t, node, info, state)
        state.prev, state.prev_read = info, read_at
        if prev is None or _restarted(prev, info) or dt <= 0:
            # A new server process (or no earlier reading): this sample is the new baseline.
            self.summary.restarts += prev is not None
            rows.append(TelemetryRow(t, "telemetry", node, "restarts", 1, "count"))
            return rows

        def row(metric: str, value: float, unit: str, source: str = "redis") -> TelemetryRow:
            return TelemetryRow(t, source, node, metric, value, unit)

        commands = max(
            0.0, _num(info, "total_commands_processed") - _num(prev, "total_commands_processed") - own_total
        )
        instantaneous = max(0.0, _num(info, "instantaneous_ops_per_sec") - own_total / dt)
        rows += [
            row("interval_s", dt, "s"),
            row("commands", commands, "commands"),
            row("commands_per_s", commands / dt, "commands/s"),
            row("instantaneous_ops_per_s", instantaneous, "ops/s"),
            row("expired_keys", max(0.0, _num(info, "expired_keys") - _num(prev, "expired_keys")), "keys"),
            row("evicted_keys", max(0.0, _num(info, "evicted_keys") - _num(prev, "evicted_keys")), "keys"),
        ]
        user = max(0.0, _num(info, "used_cpu_user") - _num(prev, "used_cpu_user")) / dt
        sys_ = max(0.0, _num(info, "used_cpu_sys") - _num(prev, "used_cpu_sys")) / dt
        rows += [
            row("cpu_user_s_per_s", user, "cpu_s/s"),
            row("cpu_sys_s_per_s", sys_, "cpu_s/s"),
            row("cpu_s_per_s", user + sys_, "cpu_s/s"),
        ]
        calls = command_calls(info)
        before = command_calls(prev)
        for name in sorted(calls):
            delta = calls[name] - before.get(name, 0) - own.get(name, 0)
            if delta > 0:
                rows.append(row(f"calls:{name}", delta, "calls"))
                rows.append(row(f"calls_per_s:{name}", delta / dt, "calls/s"))
        rows.append(row("own_commands", own_total, "commands", "telemetry"))
        rows.append(row("own_commands_per_s", own_total / dt, "commands/s", "telemetry"))
        return rows

    def _sample_processes(self, t: float) -> list[TelemetryRow]:
        with self._procs_lock:
            procs = dict(self._procs)
        if self.follow_children:
            for pid in children_of(list(procs)) - self._server_pids - set(procs):
                found = read_proc(pid)
                procs[pid] = _ProcState(found.name if found else "process")
                with self._procs_lock:
                    self._procs.setdefault(pid, procs[pid])
        rows: list[TelemetryRow] = []
        total_cpu, total_rss, any_cpu = 0.0, 0.0, False
        for pid, state in procs.items():
            if pid in self._server_pids:
                continue
            sample: ProcSample | None = read_proc(pid)
            if sample is None:
                if pid != os.getpid():
                    with self._procs_lock:
                        self._procs.pop(pid, None)  # ended: it stops appearing
                continue
            node = f"{state.name}:{pid}"
            rows.append(TelemetryRow(t, "harness", node, "rss_bytes", sample.rss_bytes, "bytes"))
            total_rss += sample.rss_bytes
            read_at = self._now()
            if state.prev_cpu_s is not None and read_at > state.prev_read:
                rate = max(0.0, sample.cpu_s - state.prev_cpu_s) / (read_at - state.prev_read)
                rows.append(TelemetryRow(t, "harness", node, "cpu_s_per_s", rate, "cpu_s/s"))
                total_cpu += rate
                any_cpu = True
            state.prev_cpu_s, state.prev_read = sample.cpu_s, read_at
        rows.append(TelemetryRow(t, "harness", "all", "rss_bytes", total_rss, "bytes"))
        if any_cpu:
            rows.append(TelemetryRow(t, "harness", "all", "cpu_s_per_s", total_cpu, "cpu_s/s"))
        return rows

    def _cost_rows(self) -> list[TelemetryRow]:
        t = self._now()
        summary = self.summary
        rows = []
        for link in self.links:
            sent = link.sent_snapshot()
            summary.own_commands[link.name] = sum(sent.values())
            summary.own_commands_by_name[link.name] = dict(sorted(sent.items()))
            per_s = summary.own_commands[link.name] / summary.duration_s if summary.duration_s > 0 else 0.0
            rows.append(
                TelemetryRow(
                    t,
                    "telemetry",
                    link.name,
                    "telemetry_commands",
                    summary.own_commands[link.name],
                    "commands",
                )
            )
            rows.append(
                TelemetryRow(t, "telemetry", link.name, "telemetry_cost_commands_per_s", per_s, "commands/s")
            )
        rows.append(TelemetryRow(t, "telemetry", "all", "samples", summary.samples, "count"))
        rows.append(TelemetryRow(t, "telemetry", "all", "sample_errors", summary.sample_errors, "count"))
        return rows


def command_calls(info: Mapping[str, Any]) -> dict[str, int]:
    """Calls per command so far from an INFO reply (commandstats), lower-case names."""
    return {
        name.removeprefix("cmdstat_"): int(stats.get("calls", 0))
        for name, stats in info.items()
        if name.startswith("cmdstat_") and isinstance(stats, dict)
    }


def _restarted(prev: Mapping[str, Any], info: Mapping[str, Any]) -> bool:
    """A different server process, or counters that went back (CONFIG RESETSTAT)."""
    return info.get("run_id") != prev.get("run_id") or _num(info, "total_commands_processed") < _num(
        prev, "total_commands_processed"
    )


def _num(info: Mapping[str, Any], key: str) -> float:
    try:
        return float(info.get(key, 0) or 0)
    except (TypeError, ValueError):
        return 0.0


def _server_facts(info: Mapping[str, Any]) -> dict[str, Any]:
    keys = (
        "redis_version",
        "valkey_version",
        "redis_mode",
        "mem_allocator",
        "maxmemory",
        "maxmemory_policy",
        "hz",
        "process_id",
        "run_id",
        "uptime_in_seconds",
        "executable",
    )
    return {key: info[key] for key in keys if key in info}


def telemetry_for_run(
    nodes: str | Sequence[str], out_dir: Path | None, *, enabled: bool = True, **kwargs: Any
) -> AbstractContextManager[Telemetry | None]:
    """`Telemetry(nodes, out_dir, **kwargs)`, or a no-op context (yielding None) when disabled."""
    if not enabled:
        return contextlib.nullcontext(None)
    return Telemetry(nodes, out_dir, **kwargs)


def telemetry_meta(telemetry: Telemetry | None, *, interval_s: float) -> dict[str, Any]:
    """What run.json records about a run's sampling: where the rows are and what they cost.

    `cost_commands_per_s` is what the sampler added to Redis (all nodes together); its
    commands are already left out of every command figure of the run.
    """
    if telemetry is None:
        return {"enabled": False, "interval_s": interval_s}
    summary = telemetry.summary
    return {
        "enabled": True,
        "file": telemetry.path.name if telemetry.path is not None else None,
        "interval_s": summary.interval_s,
        "samples": summary.samples,
        "duration_s": round(summary.duration_s, 3),
        "sample_errors": summary.sample_errors,
        "restarts": summary.restarts,
        "own_commands": dict(summary.own_commands),
        "cost_commands_per_s": round(summary.cost_commands_per_s, 4),
    }


class SegmentTelemetry:
    """One telemetry file per segment of a run (a peers driver, a chaos case), each on the
    segment's own server: `<out_dir>/<name>.csv`. `meta` collects `telemetry_meta` per
    segment. `interval_s` 0 (or `out_dir` None) samples nothing."""

    def __init__(self, out_dir: Path | None, *, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.out_dir = out_dir
        self.interval_s = interval_s
        self.enabled = out_dir is not None and interval_s > 0
        self.meta: dict[str, dict[str, Any]] = {}

    def clear(self) -> None:
        """Remove a previous run's segment files (they are not this run's)."""
        if self.out_dir is not None:
            for stale in self.out_dir.glob("*.csv"):
                stale.unlink()

    @contextlib.contextmanager
    def segment(self, nodes: str | Sequence[str], name: str) -> Iterator[Telemetry | None]:
        """Sample `nodes` (and this process's children) while the block runs."""
        sampling = telemetry_for_run(
            nodes,
            self.out_dir,
            enabled=self.enabled,
            interval_s=self.interval_s or DEFAULT_INTERVAL_S,
            follow_children=True,
            file_name=f"{name}.csv",
        )
        telemetry: Telemetry | None = None
        try:
            with sampling as telemetry:
                yield telemetry
        finally:
            if telemetry is not None:
                self.meta[name] = telemetry_meta(telemetry, interval_s=self.interval_s)
