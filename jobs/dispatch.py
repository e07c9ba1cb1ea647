"""Route runs to backup proxies (Celery queues)."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Count, Q

from inventory.models import Proxy, VirtualMachine
from jobs.choices import RunState
from jobs.models import JobRun


def choose_proxy(run: JobRun) -> Proxy | None:
    """The least busy live proxy that reaches every connection the run's VMs live on."""
    candidates = list(Proxy.objects.live())
    if not candidates:
        return None
    needed = set()
    if run.policy_id and run.policy:
        needed = set(run.policy.members.values_list("connection_id", flat=True))
    busy = dict(
        Proxy.objects.filter(pk__in=[p.pk for p in candidates])
        .annotate(active=Count("runs", filter=~Q(runs__state=RunState.FINISHED)))
        .values_list("pk", "active")
    )
    usable = []
    for proxy in candidates:
        reach = set(proxy.connections.values_list("pk", flat=True))
        if not reach or needed <= reach:
            usable.append(proxy)
    if not usable:
        return None
    return min(usable, key=lambda p: (busy.get(p.pk, 0) / max(p.task_slots, 1), p.name))


def enqueue_run(run_pk: int) -> None:
    from jobs.tasks import execute_run

    run = JobRun.objects.select_related("policy").get(pk=run_pk)
    proxy = choose_proxy(run)
    queue = proxy.queue if proxy else settings.CELERY_TASK_DEFAULT_QUEUE
    execute_run.apply_async(args=[run_pk], queue=queue)


def choose_proxy_for_vm(vm: VirtualMachine) -> Proxy | None:
    """The live proxy reaching the VM's connection with the most free task slots."""
    busy = dict(
        Proxy.objects.live()
        .annotate(
            active=Count(
                "tasks", filter=Q(tasks__kind="vm", tasks__state__in=["pending", "running"])
            )
        )
        .values_list("pk", "active")
    )
    usable = [
        p
        for p in Proxy.objects.live().prefetch_related("connections")
        if not p.connections.all() or vm.connection_id in {c.pk for c in p.connections.all()}
    ]
    if not usable:
        return None
    return min(usable, key=lambda p: (busy.get(p.pk, 0) / max(p.task_slots, 1), p.name))
