"""CPython's cyclic garbage collector, paused while a run builds its big, long-lived data.

A run over a big folder makes 50,000 listing entries, 50,000 ledger index tuples and their sets
in a few hundred milliseconds, and keeps them to its end; none of them is in a reference cycle.
Each allocation burst triggers the collector, and its older generations traverse everything
made so far, again and again: measured on a no-op fetch over 50,000 archived files, about
0.75 s of CPU of a 1.9 s run. Reference counting still frees everything as usual while it is
paused; only cycles wait for the next collection after it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection inside (nested use is harmless: the outermost one resumes it)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
