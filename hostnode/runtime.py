"""Process-wide runtime settings for a serving process: one that hosts databases, or a gateway
holding clients' connections.

CPython's cyclic garbage collector is tuned for programs that build object graphs; a host node
allocates many short-lived, acyclic objects per reducer call (tuples, bytes, small records) that
reference counting already frees. With the default thresholds the collector runs every few
calls and its full passes over every long-lived object (compiled codecs, schemas, module state)
grow slower as the process ages: measured here as ~32 → ~40 µs of CPU per `transfer` call after
40,000 calls, and a steady ~32 µs with the collector out of the way. So a serving process
freezes what it built at startup (those objects are never scanned again) and collects young
objects less often. Cycles are still collected, only later.

A gateway process needs it as much: it holds every client's connection (a thousand
subscribers' aiohttp objects), and with CPython's defaults it collected every 700 allocations and
ran full collections of 34–136 ms under a 64 × 40 load, each one a fan-out round late by as much
(loadtest/RESULTS.md, session 19).

Its threads share one GIL: a database's writer, busy with calls, holds it while another
database's writer (a chat commit to fan out) or the event loop (that commit's frames, the link)
waits. A thread that wants the GIL asks the holder to let go after the switch interval
(CPython's default 5 ms), so each such hand-over can cost that long: a commit fanned out to
1,000 subscribers under a 64 × 40 load waited ~7 ms for its writer and ~18 ms more before its
frames left the node (median of 20 rounds). With 2 ms, 2–3 and ~10 ms: fan-out p50 66 → 26–38 ms.
The price is more forced switches between busy threads: about 5 % of the peak rate at 64 × 40,
standalone and in a cluster alike (loadtest/RESULTS.md, session 19). Latency of what subscribers
see is what a realtime database is for, so serving takes it; ``ORRERY_SWITCH_INTERVAL_MS=5``
takes the rate instead.
"""

from __future__ import annotations

import gc
import logging
import os
import sys

#: The serving process's own logger (hostnode's loggers are quiet by default; this line is not).
log = logging.getLogger("orrery.runtime")

#: Young-generation threshold for serving processes (CPython's default is 700).
GEN0_THRESHOLD = 50_000
#: The GIL switch interval of serving processes, seconds (``ORRERY_SWITCH_INTERVAL_MS`` sets it).
SWITCH_INTERVAL_S = 0.002


def tune_gc_for_serving() -> None:
    """Freeze everything allocated so far, make young collections rarer, and shorten the GIL
    switch interval (call once started)."""
    sys.setswitchinterval(switch_interval())
    if not os.environ.get("ORRERY_DEFAULT_GC"):
        gc.collect()
        gc.freeze()
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    log.info(
        "serving with GIL switch interval %g ms, collector thresholds %s, %d objects frozen",
        sys.getswitchinterval() * 1000, gc.get_threshold(), gc.get_freeze_count(),
    )  # fmt: skip


def switch_interval() -> float:
    """The switch interval to serve with: ``ORRERY_SWITCH_INTERVAL_MS`` or :data:`SWITCH_INTERVAL_S`."""
    text = os.environ.get("ORRERY_SWITCH_INTERVAL_MS")
    if not text:
        return SWITCH_INTERVAL_S
    try:
        ms = float(text)
    except ValueError:
        raise ValueError(f"ORRERY_SWITCH_INTERVAL_MS must be a number of milliseconds, not {text!r}") from None
    if not 0.05 <= ms <= 100:
        raise ValueError(f"ORRERY_SWITCH_INTERVAL_MS must be between 0.05 and 100 (ms), not {text}")
    return ms / 1000
