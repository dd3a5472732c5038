"""qbench's public API: what third-party code may import and rely on.

- `qbench.driver`: the driver interface (`Driver`, `AsyncDriver`, `Op`, `record_pickup`, the
  environment variable names). Subclass `Driver` to benchmark your own queue.
- `qbench.external`: a driver for a queue written in any language, from a small TOML file
  naming a producer command and a worker command.
- `qbench.loader`: how qbench finds drivers (`module:Class`, `file.py:Class`, `driver.toml`, and
  the `qbench.drivers` entry-point group).

Everything in this package imports the standard library only: it is imported inside each
driver's own virtualenv, next to the library the driver measures.
"""

from qbench.driver import API_VERSION

__all__ = ["API_VERSION"]
