"""The child's Holdings: each transition is a new value, and no job is dropped before its
outcome is reported. (The same under real signals: tests/acceptance/test_child_holdings.py.)"""

from __future__ import annotations

import signal

from kongtaskd.child import NOTHING_HELD, STARTING, Holdings, Phase, sigterm_deferred


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


def test_sigterm_deferred_nests_and_restores_the_callers_mask():
    before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    assert signal.SIGTERM not in before
    with sigterm_deferred():
        assert signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, set())
        with sigterm_deferred():
            pass
        # The inner block restored the outer's mask: still held.
        assert signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == before
