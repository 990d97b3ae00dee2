"""The cyclic collector is held off while hook calls run and resumes when the last one ends."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cds_service import create_app
from cds_service.hooks import api, pipeline
from cds_service.web.gc_tuning import COLLECTOR_HOLD, CollectorHold
from tests.cds_helpers import car_t_patient, dev_config, full_prefetch, hook_body


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


@pytest.mark.usefixtures("collector_on")
def test_nested_holds_resume_only_after_the_last() -> None:
    hold = CollectorHold()
    hold.enter()
    hold.enter()
    assert not gc.isenabled() and hold.active == 2
    hold.exit()
    assert not gc.isenabled()
    hold.exit()
    assert gc.isenabled() and hold.active == 0


def test_a_collector_turned_off_elsewhere_stays_off() -> None:
    was = gc.isenabled()
    gc.disable()
    try:
        hold = CollectorHold()
        hold.enter()
        hold.exit()
        assert not gc.isenabled()
    finally:
        if was:
            gc.enable()


@pytest.mark.usefixtures("collector_on")
def test_overlapping_calls_still_collect_cycles_past_the_ceiling() -> None:
    hold = CollectorHold(ceiling=2_000)
    hold.enter()  # a long call that never ends while others come and go
    try:
        marker: list[Any] = []
        for _ in range(5_000):  # cycles: only the collector can free them
            node: list[Any] = []
            node.append(node)
        cycle: list[Any] = [marker]
        cycle.append(cycle)
        del cycle
        hold.enter()
        hold.exit()  # a short call ends while the long one is still running
        assert hold.held_collections == 1
        assert not any(isinstance(o, list) and o and o[0] is marker for o in gc.get_objects())
        assert not gc.isenabled()
    finally:
        hold.exit()
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_on")
def test_garbage_under_endless_overlap_stays_bounded() -> None:
    """Issue 18 item 4: calls overlap without a pause (one is always running) and each leaves cyclic
    garbage, as FHIR faults do (exceptions with tracebacks). Tracked objects must level off near the
    ceiling instead of growing with the number of calls."""
    hold = CollectorHold(ceiling=20_000)
    hold.enter()  # the call that is always in progress
    try:
        baseline = len(gc.get_objects())
        peaks = []
        for _batch in range(6):
            for _ in range(500):  # 500 overlapping calls per batch
                hold.enter()
                for _ in range(20):  # each leaves 20 cycles of 3 objects
                    a: dict[str, Any] = {}
                    b: list[Any] = [a, {"x": 1}]
                    a["b"] = b
                hold.exit()
            peaks.append(len(gc.get_objects()) - baseline)
        assert not gc.isenabled()
    finally:
        hold.exit()
    # 6 x 500 x 20 x 3 = 180,000 garbage objects were made; never more than ~ceiling live at once
    assert max(peaks) < 2 * hold.ceiling, peaks
    assert hold.held_collections >= 5


@pytest.mark.usefixtures("collector_on")
def test_a_collector_off_before_the_hold_is_never_run_by_it() -> None:
    gc.disable()
    hold = CollectorHold(ceiling=10)
    hold.enter()
    hold.enter()
    for _ in range(100):
        node: list[Any] = []
        node.append(node)
    hold.exit()
    hold.exit()
    assert hold.held_collections == 0 and not gc.isenabled()


@pytest.mark.usefixtures("collector_on")
def test_threads_share_one_count() -> None:
    hold = CollectorHold()
    barrier = threading.Barrier(8)
    seen_enabled: list[bool] = []

    def call() -> None:
        hold.enter()
        barrier.wait()  # every thread is inside a call here
        seen_enabled.append(gc.isenabled())
        barrier.wait()
        hold.exit()

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen_enabled == [False] * 8
    assert gc.isenabled() and hold.active == 0


@pytest.mark.usefixtures("collector_on")
def test_a_hook_call_holds_the_collector_and_releases_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    during: list[bool] = []
    real_run_hook = pipeline.run_hook  # what the hook view calls (imported into hooks.api)

    def observed(*args: Any, **kwargs: Any) -> Any:
        during.append(gc.isenabled())
        return real_run_hook(*args, **kwargs)

    monkeypatch.setattr(api, "run_hook", observed)
    client = create_app(dev_config(tmp_path)).test_client()
    resources = car_t_patient("gc-1")
    ok = client.post(
        "/cds-services/iec-hs-screening",
        json=hook_body("patient-view", "gc-1", prefetch=full_prefetch(resources)),
    )
    bad = client.post("/cds-services/iec-hs-screening", data=b"{", content_type="application/json")
    assert ok.status_code == 200 and bad.status_code == 400
    assert during == [False]
    assert gc.isenabled() and COLLECTOR_HOLD.active == 0  # also after the call that failed to parse
