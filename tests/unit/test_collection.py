"""`collector_held`: the cyclic collector off for a decoding, back as it was afterwards, across
threads and errors."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from langgraph_tiered_saver.records.collection import collector_held


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


def test_the_collector_is_off_inside_and_back_on_after() -> None:
    gc.enable()
    with collector_held():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_the_application_turned_off_stays_off() -> None:
    gc.disable()
    with collector_held():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_an_error_inside_gives_the_collector_back() -> None:
    gc.enable()
    with pytest.raises(ValueError), collector_held():
        raise ValueError("decoding failed")
    assert gc.isenabled()


def test_overlapping_decodings_turn_it_back_on_when_the_last_ends() -> None:
    gc.enable()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    def second() -> None:
        first_in.wait()
        with collector_held():
            second_in.set()
            first_out.wait()
            seen.append(gc.isenabled())  # the first one ended: still off for this one

    thread = threading.Thread(target=second)
    thread.start()
    with collector_held():
        first_in.set()
        second_in.wait()
    first_out.set()
    thread.join()
    assert seen == [False]
    assert gc.isenabled()
