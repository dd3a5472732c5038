"""Locust entry point: the user classes of the workload `qbench load` names in QBENCH_WORKLOAD."""

from __future__ import annotations

from scenarios.settings import settings
from scenarios.users import concrete_users

globals().update(concrete_users(settings().workload))
