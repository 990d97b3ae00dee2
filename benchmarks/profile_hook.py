"""pyinstrument profile of the 3,000-Observation patient-view hook, in-process.

    .venv/bin/python -m benchmarks.profile_hook [SOURCE_ROOT]

SOURCE_ROOT (default: this checkout) is the tree whose `cds_service` is profiled, e.g. a `git worktree` of an
older commit, so before/after profiles use the same request (built by this checkout's benchmarks/).
Profiles of record: benchmarks/results/profile-3000-{before,after}.txt.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def main() -> int:
    logging.disable(logging.CRITICAL)
    from benchmarks.hook_requests import request_bytes

    body = request_bytes(3000)
    root = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else HERE
    sys.path.insert(0, str(root))
    for name in [m for m in sys.modules if m.startswith("cds_service")]:
        del sys.modules[name]
    from pyinstrument import Profiler

    from cds_service.web.app import create_app

    app = create_app({"CDS_DEV_MODE": True, "DATABASE_URL": f"sqlite:///{tempfile.mkdtemp()}/f.sqlite3"})
    client = app.test_client()
    for _ in range(3):
        client.post("/cds-services/iec-hs-screening", data=body, content_type="application/json")
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for _ in range(10):
        client.post("/cds-services/iec-hs-screening", data=body, content_type="application/json")
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
