"""`qbench drivers`: every driver available, its version and the operations it supports."""

from __future__ import annotations

import argparse
import json
import sys

from qbench.harness.errors import UsageError
from qbench.harness.peers.registry import DriverSpec, discover, resolve
from qbench.loader import ENTRY_POINT_GROUP, DriverLoadError


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "drivers",
        help="list the drivers qbench can measure (built-in and installed), their versions and operations",
        description=(
            f"Lists every driver registered in the entry-point group {ENTRY_POINT_GROUP!r} (qbench's own "
            "and those of installed distributions), or the drivers named with --driver: name, version, "
            "operations, how it runs and where it comes from. A registered driver that cannot be "
            "loaded is listed with the reason."
        ),
    )
    parser.add_argument(
        "--driver",
        metavar="DRIVER",
        action="append",
        default=[],
        help="describe this driver only (a name, module:Class, path/to/file.py:Class or driver.toml)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.set_defaults(func=run)


def describe(spec: DriverSpec) -> dict[str, object]:
    """One driver as `qbench drivers --json` prints it."""
    return {
        "name": spec.name,
        "version": spec.declared_version(),
        "distribution": spec.cls.distribution,
        "operations": spec.operations,
        "environment": spec.environment(),
        "origin": spec.origin,
        "ref": spec.ref,
    }


def run(args: argparse.Namespace) -> int:
    registry = discover()
    try:
        specs = [resolve(text, registry) for text in args.driver] or list(registry.specs.values())
    except DriverLoadError as exc:
        raise UsageError(str(exc)) from None
    described = [describe(spec) for spec in specs]
    broken = {} if args.driver else registry.broken
    if args.json:
        doc = described + [{"name": name, "error": reason} for name, reason in broken.items()]
        print(json.dumps(doc, indent=2))
        return 0
    header = ("driver", "version", "operations", "runs in", "from")
    table = [header] + [
        (
            str(d["name"]),
            str(d["version"]),
            ", ".join(spec.operations),
            str(d["environment"]),
            str(d["origin"]),
        )
        for d, spec in zip(described, specs, strict=True)
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1])
        if i == 0:
            print("  ".join("-" * w for w in widths) + "  " + "-" * len(header[-1]))
    for name, reason in broken.items():
        print(f"unavailable: {name}: {reason}", file=sys.stderr)
    return 0
