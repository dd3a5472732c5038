"""Fault injection: workers killed, schedulers raced, Redis restarted, connections cut."""
