"""Declarative traffic shapes (`workloads/*.toml`): who sends what, how fast, for how long."""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKLOADS_DIR = Path(__file__).parent / "workloads"


@dataclass(frozen=True, kw_only=True)
class UserKind:
    """What the harness must know of a Locust user kind without importing Locust. Declared
    once, as literal class attributes of the kind's class in `qbench.scenarios.users`
    (`kind = NAME` and these fields); `USER_KIND_TABLE` reads them from that file's source."""

    main_op: str
    """The operation the kind exists to do: what the progress line follows."""
    jobs_per_call: str | None = None
    """The jobs one `main_op` call enqueues: "1", or a workload field ("burst_size"); None:
    the kind enqueues nothing."""
    driver_role: str = "calls"
    """Under `--driver`: "calls" (its users call the driver), "workers" (the driver's own
    workers play it), or the reason it cannot run there."""
    driver_op: str | None = None
    """The optional driver operation (`qbench.driver.Op`) a user of this kind calls."""
    driver_op_use: str = ""
    """What the kind does with `driver_op`, for the refusal of a driver without it."""


USERS_SOURCE = Path(__file__).with_name("users.py")
"""Where every user kind is declared: its class, and nothing else."""
KIND_FACTS = ("main_op", "jobs_per_call", "driver_role", "driver_op", "driver_op_use")


def read_user_kinds(source: Path) -> dict[str, UserKind]:
    """Every top-level class of `source` whose body assigns `kind = "NAME"`, with the facts
    its body assigns (`KIND_FACTS`, literals), in file order. The source is parsed, never
    imported: the user classes import Locust, whose gevent monkey-patching must stay out
    of the harness process. ValueError for a kind without `main_op` or a fact that is not
    a literal."""
    tree = ast.parse(source.read_text(), filename=str(source))
    table: dict[str, UserKind] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        facts: dict[str, Any] = {}
        for stmt in node.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target, value = stmt.targets[0], stmt.value
            elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                target, value = stmt.target, stmt.value
            else:
                continue
            if isinstance(target, ast.Name) and target.id in ("kind", *KIND_FACTS):
                try:
                    facts[target.id] = ast.literal_eval(value)
                except ValueError:
                    raise ValueError(
                        f"{source}:{stmt.lineno}: {node.name}.{target.id} must be a literal"
                    ) from None
        kind = facts.pop("kind", "")
        if not kind:
            continue
        if "main_op" not in facts:
            raise ValueError(f"{source}:{node.lineno}: user kind {kind!r} ({node.name}) declares no main_op")
        table[kind] = UserKind(**facts)
    return table


USER_KIND_TABLE: dict[str, UserKind] = read_user_kinds(USERS_SOURCE)
"""Every Locust user kind, by name, as its class in `qbench.scenarios.users` declares it."""
USER_KINDS = tuple(USER_KIND_TABLE)
"""Locust user kinds a workload can mix (see `qbench.scenarios.users`)."""

PRIORITY_NAMES = ("high", "normal", "low")


class WorkloadError(ValueError):
    """A workload file that does not describe a valid traffic shape (one line)."""


@dataclass(frozen=True, kw_only=True)
class Workload:
    """Traffic shape only; the system under test (the variant) is chosen at run time."""

    name: str
    description: str = ""
    users: int = 10
    spawn_rate: float = 10.0
    duration_s: float = 20.0
    user_mix: dict[str, int] = field(default_factory=lambda: {"producer": 1})
    """User kind -> Locust weight (share of the users)."""
    job_size_bytes: int = 128
    priority_mix: dict[str, float] = field(default_factory=lambda: {"normal": 1.0})
    """Priority -> share of produced jobs."""
    target_rate: float = 0.0
    """Jobs/s over all arrival-rate users (0: as fast as they can)."""
    burst_size: int = 100
    burst_pause_s: float = 1.0
    prefill_jobs: int = 0
    """Jobs queued before the users start (the consumers' backlog)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "users": self.users,
            "spawn_rate": self.spawn_rate,
            "duration_s": self.duration_s,
            "user_mix": dict(self.user_mix),
            "job_size_bytes": self.job_size_bytes,
            "priority_mix": dict(self.priority_mix),
            "target_rate": self.target_rate,
            "burst_size": self.burst_size,
            "burst_pause_s": self.burst_pause_s,
            "prefill_jobs": self.prefill_jobs,
        }

    def arrival_users(self) -> int:
        """How many of `users` send at the fixed arrival rate (pinned with Locust's `fixed_count`)."""
        weight = self.user_mix.get("arrival", 0)
        if not weight:
            return 0
        return max(1, round(self.users * weight / sum(self.user_mix.values())))


_ALLOWED: dict[str, type | tuple[type, ...]] = {
    "description": str,
    "users": int,
    "spawn_rate": (int, float),
    "duration_s": (int, float),
    "user_mix": dict,
    "job_size_bytes": int,
    "priority_mix": dict,
    "target_rate": (int, float),
    "burst_size": int,
    "burst_pause_s": (int, float),
    "prefill_jobs": int,
}


def workload_names() -> list[str]:
    return sorted(p.stem for p in WORKLOADS_DIR.glob("*.toml"))


def describe_workloads() -> str:
    """One line per shipped scenario: its name and its description."""
    lines = []
    for name in workload_names():
        try:
            description = load_workload(name).description
        except WorkloadError as exc:
            description = f"(unreadable: {exc})"
        lines.append(f"  {name:<10} {description}")
    return "\n".join(lines)


def resolve_workload_path(name_or_path: str) -> Path:
    """A workload by name (`producer`) or by path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise WorkloadError(f"workload file not found: {name_or_path}")
        return path
    candidate = WORKLOADS_DIR / f"{name_or_path}.toml"
    if not candidate.is_file():
        raise WorkloadError(
            f"unknown scenario {name_or_path!r}: expected one of "
            f"{', '.join(workload_names())} or a .toml path"
        )
    return candidate


def load_workload(name_or_path: str) -> Workload:
    path = resolve_workload_path(name_or_path)
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise WorkloadError(f"{path}: not a readable TOML workload ({exc})") from None
    return parse_workload(doc, name=path.stem, source=str(path))


def parse_workload(doc: dict[str, Any], *, name: str, source: str = "<workload>") -> Workload:
    unknown = sorted(set(doc) - set(_ALLOWED))
    if unknown:
        raise WorkloadError(
            f"{source}: unknown key(s) {', '.join(unknown)} (workloads hold traffic shape only; "
            "choose the variant with --variant)"
        )
    for key, value in doc.items():
        expected = _ALLOWED[key]
        if isinstance(value, bool) or not isinstance(value, expected):
            raise WorkloadError(f"{source}: {key}={value!r} has the wrong type")
    values: dict[str, Any] = dict(doc)
    user_mix = {str(k): v for k, v in values.pop("user_mix", {"producer": 1}).items()}
    priority_mix = {str(k): v for k, v in values.pop("priority_mix", {"normal": 1.0}).items()}
    _check_mix(source, "user_mix", user_mix, USER_KINDS, integral=True)
    _check_mix(source, "priority_mix", priority_mix, PRIORITY_NAMES, integral=False)
    workload = Workload(name=name, user_mix=user_mix, priority_mix=priority_mix, **values)
    _check_ranges(source, workload)
    return workload


def _check_mix(
    source: str, key: str, mix: dict[str, Any], allowed: tuple[str, ...], *, integral: bool
) -> None:
    if not mix:
        raise WorkloadError(f"{source}: {key} is empty")
    for kind, weight in mix.items():
        if kind not in allowed:
            raise WorkloadError(f"{source}: {key}.{kind}: expected one of {', '.join(allowed)}")
        ok_type = isinstance(weight, int) if integral else isinstance(weight, int | float)
        if isinstance(weight, bool) or not ok_type or weight < 0:
            raise WorkloadError(f"{source}: {key}.{kind}={weight!r}: expected a non-negative number")
    if sum(mix.values()) <= 0:
        raise WorkloadError(f"{source}: {key} weights sum to zero")


def _check_ranges(source: str, w: Workload) -> None:
    checks = (
        (w.users >= 1, "users must be >= 1"),
        (w.spawn_rate > 0, "spawn_rate must be > 0"),
        (w.duration_s > 0, "duration_s must be > 0"),
        (w.job_size_bytes >= 0, "job_size_bytes must be >= 0"),
        (w.target_rate >= 0, "target_rate must be >= 0"),
        (w.burst_size >= 1, "burst_size must be >= 1"),
        (w.burst_pause_s >= 0, "burst_pause_s must be >= 0"),
        (w.prefill_jobs >= 0, "prefill_jobs must be >= 0"),
        ("arrival" not in w.user_mix or w.target_rate > 0, "arrival users need target_rate > 0"),
    )
    for ok, message in checks:
        if not ok:
            raise WorkloadError(f"{source}: {message}")


def jobs_enqueued(workload: Workload, calls_per_op: dict[str, int]) -> int:
    """Jobs that `calls_per_op` (operation -> calls) enqueued, by the user kinds' table."""
    sizes: dict[str, int] = {}
    for kind in USER_KIND_TABLE.values():
        if kind.jobs_per_call is not None:
            per_call = kind.jobs_per_call
            sizes[kind.main_op] = 1 if per_call == "1" else int(getattr(workload, per_call))
    return sum(calls * sizes.get(op, 0) for op, calls in calls_per_op.items())
