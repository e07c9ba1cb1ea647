"""Runs one benchmark step and reports the step's own wall time, CPU time and peak RSS.

    python bench/launch.py RESULT_JSON ARGV...

Why a launcher: a child's ``ru_maxrss`` is at least its parent's peak RSS, because on exec the
kernel folds the old address space's high-water mark (for a fork or vfork child: the parent's)
into the process's maxrss. The bench runner grows (the KVM section runs the engine in its own
process), so steps started by it reported its peak, not theirs (179 MiB for a backup that
peaked at 110). Started from this small process, a step starts from its ~10 MiB instead.
Standard library only: it runs as a script, with any working directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    result_path, *command = argv
    start = time.perf_counter()
    child = subprocess.Popen(command)  # noqa: S603 (the benchmark's own argv)
    _, status, usage = os.wait4(child.pid, 0)
    result = {
        "exit": os.waitstatus_to_exitcode(status),
        "seconds": time.perf_counter() - start,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "maxrss_kib": usage.ru_maxrss,
    }
    with open(result_path, "w") as out:
        json.dump(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
