"""The benchmark's step measurement (bench/measure.py, bench/launch.py): a step's peak RSS is its
own, whatever the size of the process that runs the benchmark."""

import sys

import pytest

from bench.measure import StepFailed, median_run, repeated_full, run

MiB = 1 << 20
# A child that touches 40 MiB of its own, then reports how much it has.
CHILD = (
    "import sys; block = bytearray(40 << 20); block[::4096] = b'x' * len(block[::4096]);"
    "print(len(block) >> 20)"
)


def test_a_steps_peak_rss_is_its_own_not_the_runners():
    runner = bytearray(300 * MiB)
    runner[::4096] = b"r" * len(runner[::4096])  # the runner is now 300 MiB larger

    step = run([sys.executable, "-c", CHILD])

    assert step.output.strip() == "40"
    assert 40 <= step.peak_rss_mib < 150  # its 40 MiB and an interpreter, not the runner's 300
    assert step.cpu_seconds > 0
    del runner


def test_a_failing_step_names_itself_and_shows_its_output():
    with pytest.raises(StepFailed, match=r"the step failed \(exit 3\):\nbroken"):
        run([sys.executable, "-c", "print('broken'); raise SystemExit(3)"], what="the step")


@pytest.mark.parametrize(
    ("seconds", "index"),
    [([5.0], 0), ([6.0, 4.0, 5.0], 2), ([4.0, 9.0], 0), ([3.0, 3.0, 1.0, 7.0], 0)],
)
def test_the_median_run_of_repeated_full_backups(seconds, index):
    assert median_run(seconds) == index


def test_repeated_full_backups_report_the_median_run_and_build_on_the_last():
    walls = iter([6.0, 4.0, 5.0])
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def one(label: str) -> tuple[float, str]:
        wall = next(walls)
        cpu[label] = wall * 2
        return wall, f"repo of {label}"

    last = repeated_full(3, one, seconds, cpu)

    assert last == "repo of full-3"
    assert seconds == {"full": 5.0, "full-1": 6.0, "full-2": 4.0, "full-3": 5.0}
    assert cpu["full"] == 10.0
