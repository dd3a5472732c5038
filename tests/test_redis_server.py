"""Provisioning: a given server is never owned or flushed; a started one always stops."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import redis

from qbench.harness.infra.redis_server import (
    NotOwnedError,
    RedisServerProcess,
    RedisUnavailableError,
    docker_available,
    find_redis_server_binary,
    free_port,
    provision,
    redis_for_run,
)
from qbench.queue_impl.connection import redact_url


@pytest.fixture(autouse=True)
def no_inherited_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test picks the server itself, whatever the suite was started with."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_SERVER", raising=False)


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def test_an_explicit_url_is_never_owned_and_never_flushed(redis_url: str, raw_client: redis.Redis) -> None:
    raw_client.set("qbench:{not-mine}:sentinel", b"keep")
    try:
        with provision(redis_url) as server:
            assert (server.info.source, server.owned, server.process) == ("url", False, None)
            with pytest.raises(NotOwnedError, match=r"refusing to flush .*: qbench did not start it"):
                server.flushall()
        assert raw_client.get("qbench:{not-mine}:sentinel") == b"keep"
        assert _answers(redis_url)  # closing a provisioned URL leaves the server alone
    finally:
        raw_client.delete("qbench:{not-mine}:sentinel")


def test_redis_url_from_the_environment_is_not_owned_either(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    with provision(use_docker=False, password="ignored-for-a-given-url") as server:
        assert (server.url, server.info.source, server.owned) == (redis_url, "url", False)
        with pytest.raises(NotOwnedError):
            server.flushall()


def test_a_started_server_is_described_owned_and_stopped_by_close() -> None:
    server = provision(use_docker=False)
    try:
        assert (server.info.source, server.owned) == ("binary", True)
        assert server.info.version and server.info.allocator and server.info.binary
        assert server.url.startswith("redis://127.0.0.1:")
        assert _answers(server.url)
        client = redis.Redis.from_url(server.url)
        client.set("k", b"v")
        assert client.config_get("save") == {"save": ""}  # persistence off
        assert client.config_get("appendonly") == {"appendonly": "no"}
        server.flushall()  # allowed: qbench started it
        assert client.dbsize() == 0
        client.close()
        assert server.process is not None
        data_dir = server.process.dir
    finally:
        server.close()
    assert not _answers(server.url)
    assert not data_dir.exists()
    server.close()  # closing twice is harmless


@pytest.mark.parametrize("opener", ["provision", "redis_for_run"])
def test_a_started_server_stops_when_an_exception_passes_through(opener: str) -> None:
    urls: list[str] = []
    with pytest.raises(RuntimeError, match="test failure"):
        context = provision(use_docker=False) if opener == "provision" else redis_for_run(use_docker=False)
        with context as server:
            urls.append(server.url)
            assert _answers(server.url)
            raise RuntimeError("test failure")
    assert len(urls) == 1
    assert not _answers(urls[0])


def test_a_password_protected_server_and_its_redacted_url() -> None:
    with provision(use_docker=False, password="s3cret") as server:
        assert server.url.startswith("redis://:s3cret@127.0.0.1:")
        assert _answers(server.url)
        without_password = server.url.replace(":s3cret@", "")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(without_password).ping()
        assert "s3cret" not in str(server.info.as_dict())
        assert server.info.as_dict()["url"].startswith("redis://:***@127.0.0.1:")


def test_restart_keeps_the_port_and_loses_the_data() -> None:
    process = RedisServerProcess()
    process.start()
    try:
        client = redis.Redis.from_url(process.url)
        client.set("k", b"v")
        port = process.port
        process.restart()
        assert process.port == port
        assert client.get("k") is None  # persistence is off
        client.close()
    finally:
        process.stop()
    assert not _answers(process.url)


def test_docker_probe_answers_quickly() -> None:
    # A hang guard, not a performance figure: with no engine the probe must not
    # stall every run of the suite.
    started = time.monotonic()
    available = docker_available()
    assert time.monotonic() - started < 1.5
    assert isinstance(available, bool)


def test_docker_probe_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QBENCH_NO_DOCKER", "1")
    assert docker_available() is False


def closed_docker_host(monkeypatch: pytest.MonkeyPatch) -> int:
    """Point DOCKER_HOST at a loopback port nothing listens on: an engine that is not there."""
    port = free_port()
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{port}")
    monkeypatch.delenv("QBENCH_NO_DOCKER", raising=False)
    return port


def server_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "qbench.harness.infra.redis_server"]


def test_a_container_that_cannot_start_falls_back_to_a_binary_and_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_docker_host(monkeypatch)
    with caplog.at_level(logging.WARNING), provision(use_docker=True) as server:
        assert (server.info.source, server.owned) == ("binary", True)
        assert server.process is not None and _answers(server.url)
    [message] = server_warnings(caplog)
    assert message.startswith("testcontainers Redis did not start (DockerException: ")
    assert message.endswith("); using a local redis-server")
    assert f"port={port}" in message and "\n" not in message


def test_docker_probe_says_why_it_found_no_engine(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_docker_host(monkeypatch)
    with caplog.at_level(logging.WARNING):
        assert docker_available() is False
    [message] = server_warnings(caplog)
    assert message.startswith(f"no Docker engine at tcp://127.0.0.1:{port} (DockerException: ")
    assert message.endswith("); using a local redis-server") and "\n" not in message


def test_no_docker_configured_is_not_a_fallback_worth_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("QBENCH_NO_DOCKER", "1")
    with caplog.at_level(logging.WARNING):
        assert docker_available() is False
    assert server_warnings(caplog) == []


@pytest.mark.parametrize("kind", ["not executable", "missing", "directory"])
def test_redis_server_pointing_to_a_non_executable_gives_a_clear_error(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "redis-server"
    if kind == "not executable":
        target.write_text("#!/bin/sh\n")
        target.chmod(0o644)
    elif kind == "directory":
        target.mkdir()
    monkeypatch.setenv("REDIS_SERVER", str(target))
    message = f"REDIS_SERVER={target} is not an executable file"
    with pytest.raises(RedisUnavailableError, match=message):
        find_redis_server_binary()
    with pytest.raises(RedisUnavailableError, match=message):
        provision(use_docker=False)


def test_an_executable_that_is_not_a_redis_server_fails_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "fake-redis-server"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("REDIS_SERVER", str(fake))
    reason = f"redis-server {fake} did not start: exited with code 3, no log"
    with pytest.raises(RedisUnavailableError, match=reason) as caught:
        provision(use_docker=False)
    assert "\n" not in str(caught.value)


def test_a_server_rejecting_its_arguments_fails_to_start_with_its_reason() -> None:
    # redis-server prints argument errors to stderr before its log file opens.
    with pytest.raises(RedisUnavailableError, match=r"did not start: argument\(s\) must be one of") as caught:
        provision(use_docker=False, extra_args=["--maxmemory-policy", "no-such-policy"])
    assert "\n" not in str(caught.value)


def test_an_unreachable_url_fails_within_a_few_seconds() -> None:
    closed_port = free_port()  # bound then released: nothing listens there
    url = f"redis://:hunter2@127.0.0.1:{closed_port}/0"
    started = time.monotonic()
    with pytest.raises(
        RedisUnavailableError, match=f"cannot reach Redis at redis://:\\*\\*\\*@127.0.0.1:{closed_port}"
    ):
        provision(url)
    assert time.monotonic() - started < 5  # a hang guard: the connect timeout is 2 s
    with pytest.raises(RedisUnavailableError) as caught:
        provision(url)
    assert "hunter2" not in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@host:1/0", "redis://:***@host:1/0"),
        ("redis://user:pw@host:1", "redis://user:***@host:1"),
        ("rediss://user:p@ss@host:1", "rediss://user:***@host:1"),
        ("redis://user@host:1/0", "redis://user@host:1/0"),
        ("not a url", "not a url"),
    ],
)
def test_urls_are_redacted(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_free_ports_are_loopback_ports_nobody_listens_on() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    assert not _answers(f"redis://127.0.0.1:{port}/0")
