"""Locust entry point: the user classes of the run's workload, and qbench's event wiring.

The master (or the local process) takes the workload from the run spec `qbench load`
passes; a worker takes its own scenario's (`qbench load SCENARIO --worker`), whose user
classes must match the master's (checked when the test starts).
"""

from __future__ import annotations

from scenarios import reporting
from scenarios.settings import import_workload
from scenarios.users import concrete_users

globals().update(concrete_users(import_workload()))
_ = reporting  # imported for its Locust event listeners
