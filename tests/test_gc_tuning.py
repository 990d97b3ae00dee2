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
def test_overlapping_calls_still_collect_cycles_past_the_backstop() -> None:
    hold = CollectorHold(backstop=2_000)
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
        assert hold.backstop_collections == 1
        assert not any(isinstance(o, list) and o and o[0] is marker for o in gc.get_objects())
        assert not gc.isenabled()
    finally:
        hold.exit()
    assert gc.isenabled()


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
