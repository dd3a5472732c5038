"""`qbench site`: a static HTML site of results/ that opens from the file system."""

from __future__ import annotations

import argparse
from pathlib import Path

from qbench.harness.errors import UsageError
from qbench.harness.results.site import SiteError, build_site


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "site",
        help="build a static HTML site from results/ (no network needed to view it)",
        description="An index of every run under results/ and one page per run (its report as HTML, "
        "charts and data files beside it), history charts included. Self-contained: open "
        "site/index.html from the file system.",
    )
    parser.add_argument(
        "--results", type=Path, default=Path("results"), help="results tree (default results/)"
    )
    parser.add_argument("--out", type=Path, default=Path("site"), help="where to write it (default site/)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.out.resolve() in (args.results.resolve(), *args.results.resolve().parents):
        raise UsageError(f"--out {args.out} would overwrite the results it is built from")
    try:
        pages = build_site(args.results, args.out)
    except SiteError as exc:
        raise UsageError(str(exc)) from None
    print(f"{pages[0]}: {len(pages) - 1} run pages")
    return 0
