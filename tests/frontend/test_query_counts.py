"""Query-count baseline of every console list page.

Each page is requested with a small data set and again with one three times bigger. The number of
SQL queries must (a) equal the count committed in ``query_baseline.json``, so a page cannot
silently get more expensive, and (b) be the same for both sizes, so no page runs a query per row
(N+1).

Every page listed must resolve (a missing page fails), and a page that is not in the baseline
fails until it is added.

To accept new counts (a new page, or a change that really needs more or fewer queries), run::

    UPDATE_QUERY_BASELINE=1 pytest tests/frontend/test_query_counts.py

which rewrites the counts of the pages it ran (and drops pages that no longer exist); review and
commit the diff of ``query_baseline.json`` with the change that caused it.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from backupconsole import audit, services
from inventory.models import Proxy
from jobs.choices import RuleKind, RunKind, RunResult, RunState, TaskKind, TaskState, Trigger
from jobs.models import JobRun, RunLog, RunTask, Schedule, SelectionRule
from storage.models import RestorePointDisk
from tests.factories import (
    ConnectionFactory,
    PolicyFactory,
    RepositoryFactory,
    RestorePointFactory,
    VirtualDiskFactory,
    VirtualMachineFactory,
)

pytestmark = pytest.mark.django_db

# URL names (namespace "frontend") of the console's list pages.
PAGES = (
    "home",
    "inventory",
    "proxies",
    "policies",
    "runs",
    "repositories",
    "audit",
    "users",
    "tokens",
)
BASELINE = Path(__file__).with_name("query_baseline.json")
UPDATE = os.environ.get("UPDATE_QUERY_BASELINE") == "1"
# Units of rows (see populate); the big data set has three times as many. Both stay below the
# pages' list limits (e.g. 6 running jobs on the dashboard), so every row added is also shown.
SMALL = 1

_serial = itertools.count(1)


def populate(units: int, owner: Any) -> None:
    """``units`` times one of each row the list pages show, linked as real ones are: a connection
    with a tagged VM and two disks, a proxy, a repository with a policy protecting the VM, a
    finished backup with its restore point, a running one, a failed restore, a verify job, a user
    with a scoped role and an API token, and their audit events."""
    now = timezone.now()
    for _ in range(units):
        n = next(_serial)
        connection_ = ConnectionFactory()
        vm = VirtualMachineFactory(connection=connection_, tags=[f"tier-{n}"])
        disks = [VirtualDiskFactory(vm=vm) for _ in range(2)]
        proxy = Proxy.objects.create(name=f"proxy-{n}", queue=f"proxy-{n}", last_heartbeat=now)
        proxy.connections.add(connection_)
        repository = RepositoryFactory(capacity_bytes=2**40, used_bytes=n * 2**30)
        policy = PolicyFactory(repository=repository)
        policy.vms.add(vm)
        policy.members.add(vm)
        SelectionRule.objects.create(policy=policy, kind=RuleKind.TAG, value=f"tier-{n}")
        Schedule.objects.create(policy=policy, cron="0 2 * * *")
        runs = [
            JobRun.objects.create(
                kind=kind,
                policy=policy if kind == RunKind.BACKUP else None,
                repository=repository,
                trigger=Trigger.SCHEDULE,
                requested_by=owner,
                proxy=proxy,
                state=state,
                result=result,
                started_at=now,
                finished_at=now if state == RunState.FINISHED else None,
                bytes_done=2**30,
                bytes_total=2**31,
            )
            for kind, state, result in (
                (RunKind.BACKUP, RunState.FINISHED, RunResult.SUCCEEDED),
                (RunKind.BACKUP, RunState.WORKING, ""),
                (RunKind.RESTORE, RunState.FINISHED, RunResult.FAILED),
                (RunKind.VERIFY, RunState.FINISHED, RunResult.WARNING),
            )
        ]
        for run in runs:
            parent = RunTask.objects.create(
                run=run, kind=TaskKind.VM, name=vm.name, vm=vm, proxy=proxy, state=TaskState.RUNNING
            )
            for disk in disks:
                RunTask.objects.create(
                    run=run, parent=parent, kind=TaskKind.DISK, name=disk.device_key, disk=disk
                )
            RunLog.objects.create(run=run, task=parent, message=f"{vm.name} started")
        point = RestorePointFactory(vm=vm, repository=repository, run=runs[0], logical_bytes=2**31)
        for disk in disks:
            RestorePointDisk.objects.create(
                restore_point=point, disk=disk, device_key=disk.device_key, capacity_bytes=2**30
            )
        user = get_user_model().objects.create_user(username=f"user-{n}", email=f"u{n}@example.org")
        services.assign_role(user=user, role="operator", acting_user=owner)
        services.assign_role(
            user=user,
            role="viewer",
            object_types=["inventory.virtualmachine"],
            constraints={"tags__name": f"tier-{n}"},
            acting_user=owner,
        )
        services.rotate_token(user, acting_user=owner)
        audit.record(
            "inventory.connection.create",
            connection_,
            acting_user=owner,
            after=audit.snapshot(connection_),
        )


def measure(client: Client, url: str) -> list[str]:
    """The SQL of one request of ``url``, after one warm-up request (so per-process caches, such
    as content types, are filled whichever tests ran before)."""
    client.get(url)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, f"{url} answered {response.status_code}"
    return [query["sql"] for query in captured.captured_queries]


def shape(sql: str) -> str:
    """A statement with its literals masked, shortened for a failure message."""
    return re.sub(r"\b\d+\b|'[^']*'", "?", sql)[:300]


def grown(small: list[str], large: list[str]) -> str:
    """The statements run more often for more rows."""
    before, after = Counter(map(shape, small)), Counter(map(shape, large))
    lines = [f"{after[s] - before[s]:+d} times: {s}" for s in after if after[s] != before[s]]
    return "\n".join(lines) or "(same statements, different count)"


def load_baseline() -> dict[str, int]:
    return json.loads(BASELINE.read_text()) if BASELINE.exists() else {}


def store_baseline(page: str, count: int) -> None:
    baseline = load_baseline()
    baseline[page] = count
    BASELINE.write_text(json.dumps(dict(sorted(baseline.items())), indent=2) + "\n")


@pytest.mark.parametrize("page", PAGES)
def test_list_page_query_count(page: str, client: Client, new_user: Any) -> None:
    baseline = load_baseline()
    try:
        url = reverse(f"frontend:{page}")
    except NoReverseMatch:
        pytest.fail(f"frontend:{page} is a console list page but does not resolve")

    admin = new_user("admin", "administrator")
    client.force_login(admin)
    populate(SMALL, admin)
    small = measure(client, url)
    populate(2 * SMALL, admin)
    large = measure(client, url)

    assert len(large) == len(small), (
        f"{url}: {len(small)} queries for {SMALL} units of rows, {len(large)} for {3 * SMALL}: "
        f"a query per row (N+1)?\n{grown(small, large)}"
    )
    if UPDATE:
        store_baseline(page, len(small))
        return
    assert page in baseline, (
        f"{url} is not in {BASELINE.name}: run UPDATE_QUERY_BASELINE=1 pytest {__file__}"
    )
    assert len(small) == baseline[page], (
        f"{url} ran {len(small)} queries; the baseline is {baseline[page]}. If the change is "
        f"intended, run UPDATE_QUERY_BASELINE=1 pytest {__file__} and commit the file.\n"
        + "\n".join(map(shape, small))
    )
