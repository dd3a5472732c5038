"""Every driver measured alike: the presets, the peer libraries (RQ, arq, SAQ, Dramatiq,
Huey, Celery, taskiq; BullMQ and Bee-Queue through the external driver) and third parties'.

The driver interface itself is public and lives in `qbench.driver`. The agent and the
driver modules here are imported inside each driver's own environment, so they import only
the standard library, `qbench` and their library at top level; the harness-side modules
(`registry`, `suite`, `runner`, `report`, `envs`) are imported by the verbs.
"""

DEFAULT_OUT = "results/peers"
