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


class CountingArm:
    """An arm that fails a step's recalls past ``capacity`` of them: a step of ``rate`` for
    ``step_s`` sends ``round(rate * step_s)``, so the rates it passes are known exactly."""

    def __init__(self, name: str, capacity: int) -> None:
        self.name, self.capacity, self.calls = name, capacity, 0
        self.errors: list[str] = []

    def reset(self) -> None:
        self.calls = 0

    def recorded(self) -> int:
        return 0

    def telemetry(self) -> list[object]:
        return []

    async def arecall(self, ask: Ask, *, timeout: float | None = None) -> None:
        self.calls += 1
        if self.calls > self.capacity:
            raise InvalidInput("over capacity")


def test_a_ramp_refines_between_each_arms_last_pass_and_its_failure() -> None:
    arms = [CountingArm("a", 60), CountingArm("b", 30)]  # 300/s and 150/s at 0.2 s steps
    asks = [Ask("t", str(i)) for i in range(200)]
    steps = loadgen.ramp(
        arms,  # type: ignore[arg-type]
        asks,
        cached=False,
        ladder=[100.0, 200.0, 400.0],
        step_s=0.2,
        bound_ms=1e9,  # the arm's errors alone decide: a CI stall must not fail a step
        refine=2,
    )
    a = [(s.rate, s.passed) for s in steps["a"]]
    # 100, 200 pass; 400 (80 recalls) fails; then sqrt(200*400) = 282.8 (57) passes and
    # sqrt(282.8*400) = 336.3 (67) fails.
    assert a == [(100.0, True), (200.0, True), (400.0, False), (282.8, True), (336.3, False)]
    b = [(s.rate, s.passed) for s in steps["b"]]
    # 200 (40 recalls) fails and the arm stops; 141.4 (28) passes, 168.2 (34) fails.
    assert b == [(100.0, True), (200.0, False), (141.4, True), (168.2, False)]
    assert loadgen.best_step(steps["a"]).rate == 282.8  # type: ignore[union-attr]
    assert loadgen.gap(steps["a"]) == (282.8, 336.3)


def test_a_ramp_does_not_refine_an_arm_that_never_failed_or_never_passed() -> None:
    arms = [CountingArm("fast", 10_000), CountingArm("broken", 0)]
    steps = loadgen.ramp(
        arms,  # type: ignore[arg-type]
        [ASK] * 50,
        cached=False,
        ladder=[50.0, 100.0],
        step_s=0.2,
        bound_ms=1e9,
        refine=3,
    )
    assert [s.rate for s in steps["fast"]] == [50.0, 100.0]
    assert [(s.rate, s.passed) for s in steps["broken"]] == [(50.0, False)]


def test_open_loop_keeps_each_request_in_its_send_place() -> None:
    """A burst's slow first request finishing after the next burst's: each latency stays in
    its request's place (the report resamples bursts as runs of that order)."""
    slow = {"a0": 0.3}

    async def call(ask: Ask) -> None:
        if ask.text == "a2":
            raise InvalidInput("refused")
        await asyncio.sleep(slow.get(ask.text, 0.0))

    asks = [Ask("t", text) for text in ("a0", "a1", "a2", "b0", "b1", "b2")]
    phase = loadgen.run_phase(call, asks, [0.0, 0.0, 0.0, 0.1, 0.1, 0.1], 6)
    assert phase.ms[0] >= 290.0  # the slow one, still first
    assert all(m < 250.0 for m in (phase.ms[1], *phase.ms[3:]))
    assert phase.ms[2] != phase.ms[2] and len(phase.errors) == 1  # failed: NaN in place
