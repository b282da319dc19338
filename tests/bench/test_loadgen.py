"""The load generators: open-loop accounting holds for the task-per-request generator and
for the pacer (latency from the intended send time, so a slow call is charged its queue)."""

from __future__ import annotations

import asyncio
import time

from athena.bench import loadgen
from athena.bench.workloads import Ask
from athena.errors import InvalidInput

ASK = Ask("t", "q")


def test_pacer_charges_a_blocked_request_from_its_intended_time() -> None:
    calls: list[float] = []

    async def call(ask: Ask) -> None:
        calls.append(time.perf_counter())
        if len(calls) == 1:
            await asyncio.sleep(0.05)  # the first holds the pacer back 50 ms

    offsets = [0.0, 0.01, 0.02, 0.03]
    phase = loadgen.run_phase(call, [ASK] * 4, offsets, threads=1, pacer=True)
    assert phase.completed == 4 and phase.errors == []
    # Each later request was due 10/20/30 ms in but could only go after ~50 ms.
    for due, ms in zip(offsets[1:], phase.ms[1:], strict=True):
        assert ms >= (0.05 - due) * 1000.0 - 1.0
    assert phase.ms[0] >= 49.0


def test_pacer_waits_for_the_schedule_and_counts_errors() -> None:
    async def call(ask: Ask) -> None:
        if ask.text == "bad":
            raise InvalidInput("bad query")

    asks = [ASK, Ask("t", "bad"), ASK]
    started = time.perf_counter()
    phase = loadgen.run_phase(call, asks, [0.0, 0.02, 0.04], threads=1, pacer=True)
    assert time.perf_counter() - started >= 0.04  # it did not send ahead of the schedule
    assert phase.completed == 2 and len(phase.errors) == 1
    assert all(0.0 <= ms < 20.0 for ms in phase.ms if ms == ms)


def test_ceilings_are_measured_and_the_inline_one_is_higher() -> None:
    ladder = loadgen.rates(200, 3_200, 2.0)
    hop = loadgen.ceiling(ladder, 0.2)
    inline = loadgen.ceiling(ladder, 0.2, pacer=True)
    assert inline == ladder[-1]  # a no-op inline keeps up with every rate here
    assert 0 < hop <= inline
