"""One rule for a tool or privilege a test needs and does not have: under CI=true the run
fails (CI must have installed everything); on a developer's machine the test is skipped."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(message: str) -> NoReturn:
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
