"""Peer libraries (RQ, arq, SAQ, Dramatiq, Huey, Celery, taskiq) and the presets, measured alike.

This package is also imported inside the peer libraries' own virtualenvs (by
`harness.peers.agent`), so its driver-side modules (`base`, `registry`, `agent`, the
drivers) import only the standard library at top level; the harness-side ones
(`suite`, `runner`, `report`, `envs`) are imported by the `peers` verb.
"""

DEFAULT_OUT = "results/peers"
