"""The `qbench` verbs: one module each, argument parsing and translating errors only.

Each defines `add_parser(subparsers)` (which sets `func`) and `run(args) -> int`; the
measuring lives in the library packages beside this one.
"""
