"""hostnode.runtime: what a serving process sets for itself once started."""

from __future__ import annotations

import gc
import sys

import pytest

from hostnode import runtime


@pytest.fixture
def restore() -> object:
    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    yield None
    sys.setswitchinterval(interval)
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_serving_shortens_the_gil_switch_interval_and_young_collections(
    restore: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORRERY_SWITCH_INTERVAL_MS", raising=False)
    monkeypatch.delenv("ORRERY_DEFAULT_GC", raising=False)
    sys.setswitchinterval(0.005)
    runtime.tune_gc_for_serving()
    assert sys.getswitchinterval() == pytest.approx(runtime.SWITCH_INTERVAL_S)
    assert gc.get_threshold()[0] == runtime.GEN0_THRESHOLD


def test_the_switch_interval_can_be_set_in_milliseconds(restore: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORRERY_SWITCH_INTERVAL_MS", "5")
    monkeypatch.setenv("ORRERY_DEFAULT_GC", "1")  # and the collector left as it is
    threshold = gc.get_threshold()
    runtime.tune_gc_for_serving()
    assert sys.getswitchinterval() == pytest.approx(0.005)
    assert gc.get_threshold() == threshold


@pytest.mark.parametrize("bad", ["fast", "0", "-1", "1000"])
def test_a_bad_switch_interval_is_refused_by_name(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORRERY_SWITCH_INTERVAL_MS", bad)
    with pytest.raises(ValueError, match="ORRERY_SWITCH_INTERVAL_MS"):
        runtime.switch_interval()
