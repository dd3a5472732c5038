"""A detached local cluster (`qbench cluster up --detach` / `down`): its state file, and
stopping only the processes qbench started.

The state file records, per node, the pid, ports, data directory, binary and the process
start time the kernel gave it (`/proc/PID/stat`, field 22). `stop_detached` signals a pid
only while all of that still matches: a pid the system has since given to another
process is left alone and reported, never killed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qbench.harness.infra.redis_server import ClusterProcess

STATE_FORMAT = "qbench-cluster/1"
DEFAULT_STATE_FILE = Path(".qbench-cluster.json")
STOP_TIMEOUT_S = 5.0
DATA_DIR_PREFIX = "qbench-redis-"
"""Only directories qbench created (`RedisServerProcess`) are ever removed."""


class ClusterStateError(ValueError):
    """A state file that is missing, unreadable, or not one qbench wrote."""


@dataclass(frozen=True, slots=True)
class NodeRecord:
    pid: int
    port: int
    bus_port: int
    role: str
    dir: str
    binary: str
    start_ticks: int


@dataclass(frozen=True, slots=True)
class ClusterState:
    url: str
    nodes: tuple[NodeRecord, ...]
    created_at: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "url": self.url,
            "created_at": self.created_at,
            "nodes": [asdict(node) for node in self.nodes],
        }


def process_start_ticks(pid: int) -> int | None:
    """When the kernel started `pid` (clock ticks since boot), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])  # field 22 overall


def _command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def is_our_node(node: NodeRecord) -> bool:
    """True while `node.pid` is still the redis-server qbench started: same start time,
    same binary, same port."""
    if process_start_ticks(node.pid) != node.start_ticks:
        return False
    # redis-server rewrites its process title to "PATH HOST:PORT [cluster]".
    words = " ".join(_command_line(pid=node.pid)).split()
    return (
        bool(words)
        and words[0] == node.binary
        and any(w.rsplit(":", 1)[-1] == str(node.port) for w in words[1:])
    )


def record(cluster: ClusterProcess) -> ClusterState:
    """The state of a started, detached cluster."""
    nodes = []
    for i, (node, bus) in enumerate(zip(cluster.nodes, cluster.bus_ports, strict=True)):
        if node.proc is None:
            raise RuntimeError("the cluster is not started")
        ticks = process_start_ticks(node.proc.pid)
        if ticks is None:
            raise RuntimeError(f"node on port {node.port} exited right after it started")
        nodes.append(
            NodeRecord(
                pid=node.proc.pid,
                port=node.port,
                bus_port=bus,
                role="master" if i < cluster.masters else "replica",
                dir=str(node.dir),
                binary=node.binary,
                start_ticks=ticks,
            )
        )
    return ClusterState(
        url=cluster.url, nodes=tuple(nodes), created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    )


def write_state(path: Path, state: ClusterState) -> None:
    path.write_text(json.dumps(state.as_dict(), indent=2) + "\n")


def read_state(path: Path) -> ClusterState:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ClusterStateError(
            f"{path}: no such state file (is a cluster up? `qbench cluster up --detach`)"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ClusterStateError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise ClusterStateError(f"{path}: not a qbench cluster state file")
    try:
        nodes = tuple(NodeRecord(**node) for node in data["nodes"])
        return ClusterState(url=str(data["url"]), nodes=nodes, created_at=str(data.get("created_at", "")))
    except (KeyError, TypeError) as exc:
        raise ClusterStateError(f"{path}: malformed ({exc})") from None


def running_nodes(state: ClusterState) -> list[NodeRecord]:
    return [node for node in state.nodes if is_our_node(node)]


@dataclass(frozen=True, slots=True)
class StopReport:
    stopped: list[int]
    gone: list[int]
    """Pids that had already exited."""
    not_ours: list[int]
    """Pids that now belong to another process: left alone."""


def stop_detached(state: ClusterState) -> StopReport:
    """SIGTERM every node that is still the process qbench started (SIGKILL after
    `STOP_TIMEOUT_S`), then remove the data directories qbench created."""
    stopped, gone, not_ours = [], [], []
    for node in state.nodes:
        if process_start_ticks(node.pid) is None:
            gone.append(node.pid)
        elif not is_our_node(node):
            not_ours.append(node.pid)
        else:
            os.kill(node.pid, signal.SIGTERM)
            stopped.append(node.pid)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for node in state.nodes:
        if node.pid not in stopped:
            continue
        while is_our_node(node) and time.monotonic() < deadline:
            time.sleep(0.05)
        if is_our_node(node):
            os.kill(node.pid, signal.SIGKILL)
    for node in state.nodes:
        if node.pid not in not_ours and Path(node.dir).name.startswith(DATA_DIR_PREFIX):
            shutil.rmtree(node.dir, ignore_errors=True)
    return StopReport(stopped=stopped, gone=gone, not_ours=not_ours)
