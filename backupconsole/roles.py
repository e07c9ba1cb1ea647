"""Roles and the actions they grant.

An action is a verb checked by ``restrict(user, action)``: ``view`` reads, ``add``/``change``/
``delete`` edit configuration, ``run`` starts and cancels jobs, ``restore`` starts restores and
protects restore points, ``manage`` administers users and tokens.
"""

from django.db import models


class Role(models.TextChoices):
    ADMINISTRATOR = "administrator", "Administrator"
    OPERATOR = "operator", "Operator"
    VIEWER = "viewer", "Viewer"


ACTIONS = ("view", "add", "change", "delete", "run", "restore", "manage")

ROLE_ACTIONS: dict[str, frozenset[str]] = {
    Role.ADMINISTRATOR: frozenset(ACTIONS),
    Role.OPERATOR: frozenset({"view", "run", "restore"}),
    Role.VIEWER: frozenset({"view"}),
}
