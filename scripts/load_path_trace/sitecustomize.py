"""Loaded by every Python process of a traced `qbench load` (PYTHONPATH=scripts/load_path_trace,
LOAD_PATH_TRACE=FILE): at exit it appends one JSON line with the process's role, the
qbench modules it imported and the qbench files in which a function was called.
Used by scripts/load-path-files.sh; has no effect without LOAD_PATH_TRACE."""

import atexit
import json
import os
import sys
import threading

_OUT = os.environ.get("LOAD_PATH_TRACE")
if _OUT:
    _called: set[str] = set()
    _marker = os.sep + "qbench" + os.sep

    def _profile(frame, event, arg):  # type: ignore[no-untyped-def]
        code = frame.f_code
        if event == "call" and _marker in code.co_filename and code.co_flags & 1:  # CO_OPTIMIZED: a function
            _called.add("qbench" + os.sep + code.co_filename.rsplit(_marker, 1)[1])

    sys.setprofile(_profile)
    threading.setprofile(_profile)

    def _dump() -> None:
        argv = " ".join(sys.argv)
        role = "locust" if "locust" in argv else "agent" if "agent" in argv else "harness"
        imported = sorted(m for m in sys.modules if m == "qbench" or m.startswith("qbench."))
        with open(_OUT, "a") as out:
            out.write(json.dumps({"role": role, "imported": imported, "called": sorted(_called)}) + "\n")

    atexit.register(_dump)
