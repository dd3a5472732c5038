"""Locust entry point: the user classes of the run's workload, and qbench's event wiring.

The master (or the local process) takes the workload from the run spec `qbench load`
passes, and so do the local workers qbench starts; a worker started by hand takes its own
scenario's (`qbench load SCENARIO --worker`), whose user classes must match the master's
(checked when the test starts). A spec naming a driver (`qbench load --driver`) gets users
calling that driver; any other, users over the reference queue.
"""

from __future__ import annotations

from qbench.scenarios import reporting
from qbench.scenarios.driver_users import concrete_driver_users
from qbench.scenarios.settings import import_driver, import_workload
from qbench.scenarios.users import concrete_users

_workload = import_workload()
globals().update(concrete_driver_users(_workload) if import_driver() else concrete_users(_workload))
_ = reporting  # imported for its Locust event listeners
