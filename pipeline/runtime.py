"""Process-wide runtime settings for the long-running commands (worker, backtest)."""

from __future__ import annotations

import gc

GC_THRESHOLDS = (100_000, 50, 100)


def tune_gc() -> None:
    """Make Python's cyclic garbage collector run far less often.

    Detection allocates many small, short-lived, acyclic objects (event maps, profiles, summaries), which
    reference counting frees at once; with the default thresholds (700, 10, 10) the cycle collector still
    walked the young generation every 700 allocations, about a tenth of a backtest's CPU time. Objects
    that exist by now (imported modules, the app) are frozen out of the collector's scans.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
