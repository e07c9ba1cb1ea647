"""Retries: transient errors are retried with growing delays; other errors are not."""

import pytest

from inventory.kvm.connector import KVMError, KVMUnreachable
from jobs.retry import with_retries


def _flaky(failures: list[BaseException]):
    calls = []

    def action() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "done"

    return action, calls


def test_transient_errors_are_retried_with_backoff():
    action, calls = _flaky([ConnectionResetError("reset"), KVMUnreachable("no libvirt")])
    delays, notes = [], []
    result = with_retries(action, sleep=delays.append, on_retry=lambda a, e, d: notes.append(a))
    assert result == "done" and len(calls) == 3
    assert delays == [2.0, 4.0] and notes == [1, 2]


def test_other_errors_fail_at_once_and_retries_are_bounded():
    action, calls = _flaky([KVMError("libvirt refused the backup")])
    with pytest.raises(KVMError):
        with_retries(action, sleep=lambda d: None)
    assert len(calls) == 1
    action, calls = _flaky([TimeoutError()] * 5)
    with pytest.raises(TimeoutError):
        with_retries(action, attempts=3, sleep=lambda d: None)
    assert len(calls) == 3
