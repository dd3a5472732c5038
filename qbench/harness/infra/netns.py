"""Network namespaces as stand-in hosts: one namespace per role, joined by a bridge.

The first role is the hub: its namespace holds a bridge with the first address of the
subnet; every other role's namespace gets a veth pair whose one end is `eth0` with the
next address and whose other end is a port of the hub's bridge. Every namespace's
loopback is brought up (a process reaching its own address goes through `lo`).
Namespace names carry a random tag, so parallel runs never collide; they are deleted on
the way out, also on an error (deleting a namespace deletes its interfaces). Processes
started with `NetnsLab.spawn` are stopped before that. Needs root and `ip` (iproute2).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qbench.harness.infra.processes import stop
from qbench.harness.infra.redis_server import die_with_parent

IP_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 15.0
DEFAULT_SUBNET = "10.77.0.0/24"
"""Private to the namespaces: the root namespace gets no route to it."""


class NetnsError(RuntimeError):
    """Network namespaces cannot be set up here (one line)."""


@dataclass(frozen=True, kw_only=True)
class NetnsHost:
    """One stand-in host: a namespace and its address on the shared bridge."""

    role: str
    namespace: str
    address: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


def _ip(*args: str) -> None:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"ip {' '.join(args)}: {exc}") from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise NetnsError(f"ip {' '.join(args)}: {message[-1] if message else f'exit {done.returncode}'}")


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be used here, or None when they can (it creates and
    deletes one namespace to find out)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"qb-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except NetnsError as exc:
        return f"cannot create a network namespace: {exc}"
    with contextlib.suppress(NetnsError):
        _ip("netns", "del", probe)
    return None


class NetnsLab:
    """Namespaces for `roles`, set up by `netns_lab`; start processes in them with `spawn`."""

    def __init__(self, roles: Sequence[str], subnet: str = DEFAULT_SUBNET) -> None:
        if len(set(roles)) != len(roles) or not roles:
            raise ValueError(f"roles must be distinct and not empty: {roles!r}")
        network = ipaddress.ip_network(subnet)
        addresses = list(network.hosts())
        if len(roles) > len(addresses):
            raise ValueError(f"{subnet} has room for {len(addresses)} hosts, not {len(roles)}")
        tag = secrets.token_hex(3)
        self.prefix_len = network.prefixlen
        self.hosts = {
            role: NetnsHost(role=role, namespace=f"qb-{tag}-{i}", address=str(addresses[i]))
            for i, role in enumerate(roles)
        }
        self.created: list[str] = []
        self.procs: list[subprocess.Popen[Any]] = []

    def __getitem__(self, role: str) -> NetnsHost:
        return self.hosts[role]

    def setup(self) -> None:
        hub, *others = self.hosts.values()
        for host in self.hosts.values():
            _ip("netns", "add", host.namespace)
            self.created.append(host.namespace)
            _ip("-n", host.namespace, "link", "set", "lo", "up")
        _ip("-n", hub.namespace, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub.namespace, "addr", "add", f"{hub.address}/{self.prefix_len}", "dev", "br0")
        _ip("-n", hub.namespace, "link", "set", "br0", "up")
        for i, host in enumerate(others, 1):
            port = f"veth{i}"  # in the hub's namespace: names need only be unique there
            _ip("-n", hub.namespace, "link", "add", port, "type", "veth", "peer", "name", "eth0")
            _ip("-n", hub.namespace, "link", "set", "eth0", "netns", host.namespace)
            _ip("-n", hub.namespace, "link", "set", port, "master", "br0")
            _ip("-n", hub.namespace, "link", "set", port, "up")
            _ip("-n", host.namespace, "addr", "add", f"{host.address}/{self.prefix_len}", "dev", "eth0")
            _ip("-n", host.namespace, "link", "set", "eth0", "up")

    def spawn(
        self, role: str, argv: Sequence[str], *, cwd: Path, env: dict[str, str], log: Path
    ) -> subprocess.Popen[bytes]:
        """Start `argv` in `role`'s namespace (stdout and stderr to `log`); it dies with this
        process, and is stopped when the lab closes."""
        with log.open("wb") as out:
            proc = subprocess.Popen(
                self.hosts[role].command(argv),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            stop_process(proc)
        errors = []
        for namespace in reversed(self.created):
            try:
                _ip("netns", "del", namespace)
            except NetnsError as exc:
                errors.append(str(exc))
        self.created.clear()
        if errors:
            raise NetnsError("; ".join(errors))


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after a while: this process's own children only."""
    stop(proc, grace_s=STOP_TIMEOUT_S)


@contextlib.contextmanager
def netns_lab(roles: Sequence[str], subnet: str = DEFAULT_SUBNET) -> Iterator[NetnsLab]:
    """Namespaces for `roles` on one bridge (the first role holds it); all deleted on exit."""
    lab = NetnsLab(roles, subnet)
    try:
        lab.setup()
        yield lab
    finally:
        lab.close()
