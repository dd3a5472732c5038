"""Locust entry point: the user classes of the workload `qbench load` names in QBENCH_WORKLOAD:
users over the reference queue, or, with `qbench load --driver`, users calling a driver."""

from __future__ import annotations

from scenarios.driver_settings import driver_mode

if driver_mode():
    # Only in driver mode: the reference users read settings a driver run does not set.
    from scenarios.driver_settings import driver_settings
    from scenarios.driver_users import concrete_driver_users

    globals().update(concrete_driver_users(driver_settings().workload))
else:
    from scenarios.settings import settings
    from scenarios.users import concrete_users

    globals().update(concrete_users(settings().workload))
