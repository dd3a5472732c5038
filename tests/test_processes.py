"""The one helper that stops child processes: ask, wait the grace, then kill."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from qbench.harness.infra.processes import stop, stop_all

IGNORES_SIGTERM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)
EXITS_ON_SIGTERM = "import sys, time\nprint('ready', flush=True)\ntime.sleep(60)\n"


def _child(code: str, *, new_session: bool = False) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=new_session
    )
    assert proc.stdout is not None
    with proc.stdout:
        assert proc.stdout.readline() == "ready\n"  # its SIGTERM handler is installed
    return proc


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    proc = _child(IGNORES_SIGTERM)
    result = stop(proc, grace_s=0.3)
    assert result.killed
    assert result.returncode == -signal.SIGKILL
    assert proc.poll() == -signal.SIGKILL


def test_a_child_that_exits_on_sigterm_is_not_killed() -> None:
    proc = _child(EXITS_ON_SIGTERM)
    result = stop(proc, grace_s=30)
    assert not result.killed
    assert result.returncode == -signal.SIGTERM


def test_a_child_already_gone_is_reported_as_such() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    result = stop(proc, grace_s=1)
    assert result.already_exited and not result.killed and result.returncode == 0


def test_ask_none_only_waits_then_kills() -> None:
    proc = _child(EXITS_ON_SIGTERM)  # would exit on SIGTERM, but none is sent
    result = stop(proc, grace_s=0.2, ask=None)
    assert result.killed and result.returncode == -signal.SIGKILL


def test_stop_all_shares_one_grace_and_kills_the_group() -> None:
    stubborn = [_child(IGNORES_SIGTERM, new_session=True) for _ in range(2)]
    polite = _child(EXITS_ON_SIGTERM)
    results = stop_all([*stubborn, polite], grace_s=0.3, group=True)
    assert [r.killed for r in results] == [True, True, False]
    assert all(p.poll() is not None for p in [*stubborn, polite])


def test_group_stop_takes_the_children_a_leader_left_behind() -> None:
    # The leader exits on SIGTERM; its child ignores SIGTERM and would outlive it.
    leader_code = (
        "import subprocess, sys\n"
        f"child = subprocess.Popen([sys.executable, '-c', {IGNORES_SIGTERM!r}],"
        " stdout=subprocess.PIPE, text=True)\n"
        "child.stdout.readline()\n"
        "print(child.pid, flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    leader = subprocess.Popen(
        [sys.executable, "-c", leader_code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert leader.stdout is not None
    with leader.stdout:
        child_pid = int(leader.stdout.readline())
    result = stop(leader, grace_s=10, group=True)
    assert not result.killed
    for _ in range(200):  # the grandchild is reparented; wait until it is reaped by init
        try:
            with open(f"/proc/{child_pid}/stat") as fh:
                if fh.read().split()[2] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.01)
    else:
        raise AssertionError("the leader's child outlived the group stop")
