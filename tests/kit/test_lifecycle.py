"""services/kit/lifecycle.py: the collector settings a started service runs with."""

from __future__ import annotations

import gc

from services.kit.lifecycle import YOUNG_GC_THRESHOLD, settle_gc


def test_settle_gc_freezes_start_up_objects_and_collects_the_young_less_often() -> None:
    before = gc.get_threshold()
    try:
        settle_gc()
        assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
        made_later = [[]]                       # a cycle made after start-up is still collected
        made_later.append(made_later)           # type: ignore[arg-type]
        del made_later
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
