"""The child's Holdings: each transition is a new value, and no job is dropped before its
outcome is reported. (The same under real signals: tests/acceptance/test_child_holdings.py.)"""

from __future__ import annotations

import os
import signal

from kongtaskd.child import (
    NOTHING_HELD,
    STARTING,
    Holdings,
    Phase,
    SignalGate,
    sigterm_deferred,
)


def test_a_job_leaves_the_holdings_only_when_its_outcome_is_reported():
    held = Holdings((7, 8, 9), Phase.HOLDING)
    running = held.entering(Phase.RUNNING)
    assert running.jobs == (7, 8, 9) and held.phase is Phase.HOLDING  # not changed in place
    reporting = running.entering(Phase.REPORTING)
    assert reporting.jobs == (7, 8, 9) and reporting.rest == [8, 9]
    after = reporting.reported()
    assert after == Holdings((8, 9), Phase.HOLDING)
    assert after.reported().reported() == NOTHING_HELD
    assert NOTHING_HELD.phase is Phase.IDLE and STARTING.phase is Phase.STARTING


def test_a_signal_inside_a_deferred_step_runs_its_handler_when_the_step_ends():
    """Real signals, sent to this process inside nested steps: each handler runs once the
    outermost step is over, in the order the signals came; outside a step, at once."""
    gate = SignalGate()
    ran: list[str] = []
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    signal.signal(signal.SIGTERM, gate.gated(lambda signum, frame: ran.append("term")))
    signal.signal(signal.SIGUSR1, gate.gated(lambda signum, frame: ran.append("usr1")))
    try:
        with gate:
            os.kill(os.getpid(), signal.SIGUSR1)
            with gate:
                os.kill(os.getpid(), signal.SIGTERM)
            assert ran == []  # the inner step ended, the outer holds them still
        assert ran == ["usr1", "term"]
        os.kill(os.getpid(), signal.SIGTERM)
        assert ran == ["usr1", "term", "term"]
        assert gate.depth == 0 and not gate.waiting
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_the_child_defers_through_one_gate():
    assert sigterm_deferred() is sigterm_deferred()
