"""Which drivers exist: the `qbench.drivers` entry points (ours and third parties'), and
references named with `--driver`; how each is installed, and in what order reports list them."""

from __future__ import annotations

import functools
import hashlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from qbench.driver import Driver, Op
from qbench.drivers.reference_driver import VARIANT_ENV, VariantDriver
from qbench.external import ExternalDriver, ExternalSpec
from qbench.loader import DriverLoadError, entry_points, is_reference, load_driver, load_entry_point
from qbench.queue_impl.config import PRESETS, Variant, VariantError, parse_variant

BUILTIN_DISTRIBUTION = "qbench"
REFERENCE_NAMES = ("baseline", "optimized", "scripted")
PEER_NAMES = ("rq", "arq", "saq", "dramatiq", "huey", "celery", "taskiq")
"""The seven Python libraries with their defaults (labelled configurations excluded)."""
FAULT_CONFIGURATIONS = (
    "rq+retry=3",
    "arq+job_timeout=5",
    "saq+retries=3",
    "dramatiq+heartbeat_timeout=5000",
    "celery+acks_late",
    "taskiq+idle_timeout=5000",
    "bullmq+stalled_interval=5000",
    "bee-queue+check_stalled=5000",
)
"""Each library at its documented at-least-once settings: measured by `qbench chaos
--driver` (named there), left out of a `qbench peers` run that names no driver."""
BUILTIN_ORDER = (
    *REFERENCE_NAMES,
    "scripted+retention=delete",
    *PEER_NAMES,
    "taskiq+result_ex_time=3600",
    "bullmq",
    "bee-queue",
    *FAULT_CONFIGURATIONS,
)
"""Report order of the drivers qbench ships; any other driver follows, by name."""
ENV_VIRTUALENV, ENV_EXTERNAL, ENV_QBENCH = "virtualenv", "external", "qbench"
"""The values of a driver's `environment` in run.json: see `DriverSpec.environment_kind`."""
REQUIREMENTS_DIR = Path(__file__).resolve().parents[2] / "drivers" / "requirements"


@dataclass(frozen=True, slots=True)
class DriverSpec:
    """One driver qbench can run: its class, where it comes from, how it is installed."""

    name: str
    ref: str
    """What the driver's subprocesses load: `module:Class`, `/abs/file.py:Class` or `/abs/driver.toml`."""
    cls: type[Driver]
    origin: str
    """`built-in`, `entry point of DIST VERSION`, `--driver`, or `variant`."""
    env: tuple[tuple[str, str], ...] = ()
    """Environment the driver's processes get on top of qbench's (a variant's spec)."""

    @property
    def operations(self) -> list[str]:
        return [str(op) for op in Op if op in self.cls.operations]

    @property
    def external(self) -> ExternalSpec | None:
        return self.cls.spec if issubclass(self.cls, ExternalDriver) else None

    @property
    def requirements(self) -> Path | None:
        """The pip requirements file of the driver's own virtualenv; None: qbench's environment."""
        if self.cls.requirements is None:
            return None
        module = sys.modules[self.cls.__module__]
        return (Path(str(module.__file__)).parent / self.cls.requirements).resolve()

    @property
    def env_name(self) -> str | None:
        """Its virtualenv's folder name: one per requirements file, shared by a library's
        configurations (qbench's own keep their historical names)."""
        path = self.requirements
        if path is None:
            return None
        if path.parent == REQUIREMENTS_DIR.resolve():
            return path.stem
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
        return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', self.name)}-{digest}"

    @property
    def environment_kind(self) -> str:
        """Where the driver runs, for run.json and the report: `virtualenv` (its own, built
        from its requirements), `external` (its own commands, in its folder) or `qbench`
        (qbench's own environment: the reference presets, a driver without requirements)."""
        if self.external is not None:
            return ENV_EXTERNAL
        return ENV_QBENCH if self.requirements is None else ENV_VIRTUALENV

    def environment(self) -> str:
        """How the driver runs, in a few words (for `qbench drivers`)."""
        ext = self.external
        if ext is not None:
            return f"commands in {_short(ext.folder)}: {' '.join(ext.producer)} / {' '.join(ext.worker)}"
        path = self.requirements
        return "qbench's environment" if path is None else f"own virtualenv from {_short(path)}"

    def declared_version(self) -> str:
        """The version without building anything: a `name==X` pin in the requirements file,
        the version installed here, or an external driver's version command."""
        path = self.requirements
        if path is not None:
            wanted = re.sub(r"[-_.]+", "-", self.cls.distribution).lower()
            text = path.read_text() if path.is_file() else ""
            for line in text.splitlines():
                match = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^]]*\])?\s*==\s*([^\s;#]+)", line)
                if match and re.sub(r"[-_.]+", "-", match.group(1)).lower() == wanted:
                    return match.group(3)
            return "?"
        return self.cls.version()


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@dataclass
class Registry:
    """Every driver the installed entry points offer, and those that failed to load."""

    specs: dict[str, DriverSpec] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    """Entry-point name -> why it cannot be used (one line)."""


def order(names: list[str]) -> list[str]:
    """Drivers in report order: qbench's own first (presets, peers), then the rest by name."""
    rank = {name: i for i, name in enumerate(BUILTIN_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


@functools.cache
def discover() -> Registry:
    """Load every `qbench.drivers` entry point (once per process)."""
    registry = Registry()
    found: dict[str, DriverSpec] = {}
    for ep in entry_points():
        dist = ep.dist.name if ep.dist is not None else "?"
        try:
            cls = load_entry_point(ep)
        except DriverLoadError as exc:
            registry.broken[ep.name] = str(exc)
            continue
        origin = (
            "built-in"
            if dist == BUILTIN_DISTRIBUTION
            else f"entry point of {dist} {ep.dist and ep.dist.version}"
        )
        if cls.name in found:
            registry.broken[ep.name] = (
                f"driver {cls.name} (entry point of {dist}): the name is taken by {found[cls.name].origin} "
                f"{found[cls.name].ref}"
            )
            continue
        found[cls.name] = DriverSpec(cls.name, ep.value, cls, origin)
    registry.specs = {name: found[name] for name in order(list(found))}
    return registry


def resolve(text: str, registry: Registry | None = None) -> DriverSpec:
    """A driver by name (an entry point) or by reference; DriverLoadError (one line) otherwise."""
    text = text.strip()
    registry = registry or discover()
    if is_reference(text):
        cls = load_driver(text)
        ref = text
        if text.endswith(".toml"):
            ref = str(Path(text).resolve())
        else:
            module_part, _, attr = text.rpartition(":")
            if module_part.endswith(".py") or "/" in module_part:
                ref = f"{Path(module_part).resolve()}:{attr}"
        return DriverSpec(cls.name, ref, cls, "--driver")
    if text in registry.specs:
        return registry.specs[text]
    variant = _variant(text)
    if variant is not None:
        label = variant.label()
        return DriverSpec(label, VARIANT_DRIVER, VariantDriver, "variant", ((VARIANT_ENV, label),))
    for name, reason in registry.broken.items():
        if name == text:
            raise DriverLoadError(reason)
    raise DriverLoadError(
        f"unknown driver {text!r}: expected one of {', '.join(registry.specs)}, "
        "a reference-queue variant (preset+toggle=value,...), "
        "or module:Class, path/to/file.py:Class, path/to/driver.toml"
    )


VARIANT_DRIVER = "qbench.drivers.reference_driver:VariantDriver"


def _variant(text: str) -> Variant | None:
    """The reference-queue variant `text` names (`preset+toggle=value,...`), or None;
    DriverLoadError for a preset with a bad override."""
    preset, plus, _ = text.partition("+")
    if not plus or preset not in PRESETS:
        return None
    try:
        return parse_variant(text)
    except VariantError as exc:
        raise DriverLoadError(f"driver {text!r}: {exc}") from None
