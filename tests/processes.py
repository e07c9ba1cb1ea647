"""Stopping the helper processes tests start (servers, workers): politely, then for sure."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from typing import Any


def stop(
    processes: Iterable[subprocess.Popen[Any]] | subprocess.Popen[Any], timeout: float = 20
) -> None:
    for process in [processes] if isinstance(processes, subprocess.Popen) else processes:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
