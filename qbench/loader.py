"""How qbench finds a driver: by reference, or by the `qbench.drivers` entry-point group.

A reference is one of:
- `package.module:Class`: an importable module (qbench also looks in the current folder);
- `path/to/file.py:Class`: a Python file;
- `path/to/driver.toml`: an external driver (`qbench.external`).

An installed distribution registers drivers in its metadata, e.g. in pyproject.toml:

    [project.entry-points."qbench.drivers"]
    myqueue = "mypackage.driver:MyQueueDriver"

Every error is a `DriverLoadError` whose message is one line naming the driver and the
problem. Standard library only, like the rest of this package.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

from qbench.driver import Driver, driver_problems
from qbench.external import ExternalDriverError, external_driver_class

__all__ = ["ENTRY_POINT_GROUP", "DriverLoadError", "entry_points", "load_driver", "load_entry_point"]

ENTRY_POINT_GROUP = "qbench.drivers"


class DriverLoadError(Exception):
    """A driver that cannot be loaded or is not a usable driver class (one line)."""


def is_reference(text: str) -> bool:
    """True when `text` is a reference (`module:Class`, `file.py:Class`, `x.toml`), not a name."""
    return ":" in text or text.endswith(".toml") or os.sep in text


def load_driver(ref: str, *, search_cwd: bool = True) -> type[Driver]:
    """The checked driver class `ref` names (DriverLoadError otherwise)."""
    if ref.endswith(".toml"):
        try:
            return _checked(ref, external_driver_class(ref))
        except ExternalDriverError as exc:
            raise DriverLoadError(f"driver {ref}: {exc}") from None
    module_part, sep, attr = ref.rpartition(":")
    if not sep or not module_part or not attr:
        raise DriverLoadError(
            f"driver {ref!r}: expected a driver name, module:Class, path/to/file.py:Class "
            "or path/to/driver.toml"
        )
    if module_part.endswith(".py") or os.sep in module_part:
        module = _module_from_file(ref, Path(module_part))
    else:
        module = _import(ref, module_part, search_cwd=search_cwd)
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise DriverLoadError(f"driver {ref}: module {module.__name__} has no attribute {attr!r}") from None
    return _checked(ref, obj)


def _import(ref: str, name: str, *, search_cwd: bool) -> ModuleType:
    added = False
    cwd = os.getcwd()
    if search_cwd and cwd not in sys.path:
        # As `python -m` would: a module in the current folder is found.
        sys.path.append(cwd)
        added = True
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise DriverLoadError(f"driver {ref}: cannot import {name}: {exc}") from None
    except Exception as exc:  # whatever the module raises at import: still one line
        raise DriverLoadError(f"driver {ref}: importing {name} failed: {_one_line(exc)}") from None
    finally:
        if added:
            sys.path.remove(cwd)


def _module_from_file(ref: str, path: Path) -> ModuleType:
    path = path.resolve()
    if not path.is_file():
        raise DriverLoadError(f"driver {ref}: no such file {path}")
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == path:
            return loaded
        raise DriverLoadError(f"driver {ref}: a module named {name!r} is already loaded from elsewhere")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DriverLoadError(f"driver {ref}: {path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered under its name so libraries that find job functions by module name
    # (RQ, Celery) find them in this process and its children.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise DriverLoadError(f"driver {ref}: importing {path} failed: {_one_line(exc)}") from None
    return module


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _checked(ref: str, obj: object) -> type[Driver]:
    problems = driver_problems(obj)
    if problems:
        label = getattr(obj, "name", None) if isinstance(obj, type) else None
        who = f"driver {label} ({ref})" if isinstance(label, str) else f"driver {ref}"
        raise DriverLoadError(f"{who}: {'; '.join(problems)}")
    assert isinstance(obj, type) and issubclass(obj, Driver)
    return obj


def entry_points() -> list[metadata.EntryPoint]:
    """The `qbench.drivers` entry points of every installed distribution."""
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def load_entry_point(ep: metadata.EntryPoint) -> type[Driver]:
    """The checked driver class an entry point names (DriverLoadError otherwise)."""
    dist = ep.dist.name if ep.dist is not None else "?"
    try:
        obj = ep.load()
    except Exception as exc:
        raise DriverLoadError(
            f"driver {ep.name} (entry point {ep.value} of {dist}): {_one_line(exc)}"
        ) from None
    return _checked(f"entry point {ep.value} of {dist}", obj)


def module_source(cls: type[Driver]) -> Path | None:
    """The top-level package folder (or module file) a driver class comes from, so a
    subprocess can import it through a link; None for drivers defined in this package."""
    top = cls.__module__.split(".")[0]
    if top == "qbench":
        return None
    module = sys.modules.get(top)
    file = getattr(module, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    return path.parent if path.name == "__init__.py" else path
