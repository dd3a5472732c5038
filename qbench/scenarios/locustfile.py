"""Locust entry point: the user classes of the run's workload, and qbench's event wiring.

The master (or the local process) takes the workload from the run spec `qbench load`
passes, and so do the local workers qbench starts; a worker started by hand takes its own
scenario's (`qbench load SCENARIO --worker`), whose user classes must match the master's
(checked when the test starts). The same classes serve a variant and a driver: each user
picks what executes its operations from the run settings when it starts.
"""

from __future__ import annotations

from qbench.scenarios import reporting
from qbench.scenarios.settings import import_workload
from qbench.scenarios.users import concrete_users

globals().update(concrete_users(import_workload()))
_ = reporting  # imported for its Locust event listeners
