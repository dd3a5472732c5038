"""Locust load runs: plan, run in child processes, census of every job, rows and charts."""
