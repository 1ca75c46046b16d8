"""The cyclic collector is paused only inside ``collector_paused`` and always resumed."""

from __future__ import annotations

import gc

import pytest

from reportsync.gcpause import collector_paused


def test_the_collector_is_paused_inside_and_resumed_after_a_failure_and_nesting() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled(), "the inner one leaves it to the outer one"
        raise RuntimeError("the listing failed")
    assert gc.isenabled(), "resumed although the block failed"
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled(), "a collector paused by someone else stays paused"
    finally:
        gc.enable()
