"""The Celery app. Backup proxies are `celery worker` processes, each consuming its own queue."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backupconsole.settings")

app = Celery("backupconsole")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _install_steps() -> None:
    from jobs.heartbeat import ProxyHeartbeat

    app.steps["worker"].add(ProxyHeartbeat)


_install_steps()
