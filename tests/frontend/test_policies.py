"""The policies pages: list, create/edit through the form (rules, schedules, retention, options),
the live previews from real rows, run now and enable/disable, each with its permission."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from jobs.choices import RunResult, RunState, Trigger
from jobs.models import JobRun, ProtectionPolicy, Schedule
from jobs.services import create_policy
from storage.engine_access import vm_key_for
from tests.factories import (
    PolicyFactory,
    RepositoryFactory,
    RestorePointFactory,
    VirtualMachineFactory,
)

pytestmark = pytest.mark.django_db

NEW = "/policies/new/"


def form_data(repository: Any, /, **overrides: Any) -> dict[str, Any]:
    """What the browser posts for a new policy: one rule row and one schedule row."""
    data = {
        "name": "web-nightly",
        "description": "",
        "enabled": "on",
        "repository": str(repository.pk),
        "keep_last": "7",
        "keep_daily": "14",
        "keep_weekly": "0",
        "keep_monthly": "0",
        "keep_yearly": "0",
        "rpo_hours": "24",
        "consistency": "",
        "transport_order": "",
        "max_parallel_vms": "",
        "bandwidth_limit_mbps": "",
        "copy_repository": "",
        "rules-TOTAL_FORMS": "1",
        "rules-INITIAL_FORMS": "0",
        "rules-0-kind": "tag",
        "rules-0-value": "",
        "schedules-TOTAL_FORMS": "1",
        "schedules-INITIAL_FORMS": "1",
        "schedules-0-preset": "",
        "schedules-0-cron": "0 22 * * 1-5",
        "schedules-0-timezone": "Europe/Berlin",
        "schedules-0-enabled": "on",
    }
    data.update(overrides)
    return data


def field_error(html: str, field_id: str) -> str:
    match = re.search(
        rf'<div class="invalid-feedback d-block" id="{field_id}_error">(.*?)</div>', html
    )
    assert match, f"no error shown next to #{field_id}"
    return match.group(1)


@pytest.fixture
def admin(logged_in: Any) -> Client:
    return logged_in("ada", "administrator")


# --- list ----------------------------------------------------------------------------------------


def test_list_shows_resolved_vm_count_next_run_repository_and_last_run(admin: Client) -> None:
    VirtualMachineFactory(name="web-1", tags=["web"])
    VirtualMachineFactory(name="web-2", tags=["web"])
    VirtualMachineFactory(name="db-1")
    repository = RepositoryFactory(name="repo-a")
    policy = create_policy(
        data={"name": "web-nightly", "repository": repository},
        vms=[],
        excluded_vms=[],
        rules=[{"kind": "tag", "value": "web", "exclude": False}],
        schedules=[{"cron": "0 22 * * *", "timezone": "UTC", "enabled": True}],
        acting_user=None,
    )
    JobRun.objects.create(
        policy=policy, trigger=Trigger.MANUAL, state=RunState.FINISHED, result=RunResult.WARNING
    )

    response = admin.get("/policies/")

    assert response.status_code == 200
    html = response.content.decode()
    row = html[html.index(f'id="policy-row-{policy.pk}"') :]
    row = row[: row.index("</tr>")]
    assert "web-nightly" in row and "repo-a" in row
    assert re.search(r'<td class="text-end">2</td>', row), "two VMs match the tag rule"
    assert "Warning" in row
    now = timezone.now()
    next_run = now.replace(hour=22, minute=0, second=0, microsecond=0)
    if next_run <= now:
        next_run += timedelta(days=1)
    assert f'datetime="{next_run.isoformat()}"' in row
    assert f'id="policy-run-now-{policy.pk}"' in row


def test_list_shows_times_in_the_users_time_zone(admin: Client) -> None:
    policy = create_policy(
        data={"name": "p", "repository": RepositoryFactory()},
        vms=[],
        excluded_vms=[],
        rules=[],
        schedules=[{"cron": "0 22 * * *", "timezone": "UTC", "enabled": True}],
        acting_user=None,
    )
    admin.cookies["console_tz"] = "Asia/Tokyo"

    html = admin.get("/policies/").content.decode()

    # 22:00 UTC is 07:00 the next morning in Tokyo.
    row = html[html.index(f'id="policy-row-{policy.pk}"') :]
    assert re.search(r"\d{4}-\d\d-\d\d 07:00</time>", row)


def test_list_filters_with_the_shared_filterset_and_htmx_returns_the_results_only(
    admin: Client,
) -> None:
    PolicyFactory(name="alpha-nightly", enabled=True)
    PolicyFactory(name="beta-weekly", enabled=False)

    html = admin.get("/policies/?enabled=false").content.decode()
    assert "beta-weekly" in html and "alpha-nightly" not in html

    partial = admin.get("/policies/?name=alpha", headers={"HX-Request": "true"})
    body = partial.content.decode()
    assert body.lstrip().startswith('<section id="policy-results"')
    assert "alpha-nightly" in body and "beta-weekly" not in body
    assert "<html" not in body

    none = admin.get("/policies/?name=zzz").content.decode()
    assert "No policy matches the filters." in none


def _policy_with_history(index: int) -> ProtectionPolicy:
    policy = create_policy(
        data={"name": f"policy-{index:02d}", "repository": RepositoryFactory()},
        vms=[VirtualMachineFactory()],
        excluded_vms=[],
        rules=[{"kind": "tag", "value": "web", "exclude": False}],
        schedules=[
            {"cron": "0 22 * * *", "timezone": "UTC", "enabled": True},
            {"cron": "0 4 * * 6", "timezone": "Europe/Berlin", "enabled": True},
        ],
        acting_user=None,
    )
    JobRun.objects.create(policy=policy, trigger=Trigger.MANUAL, state=RunState.WORKING)
    return policy


def test_list_costs_the_same_queries_for_2_or_8_policies_and_pages(admin: Client) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin.get("/policies/").status_code == 200
        return len(captured)

    for index in range(2):
        _policy_with_history(index)
    few = queries()
    for index in range(2, 8):
        _policy_with_history(index)
    assert queries() == few

    for index in range(8, 30):
        PolicyFactory(name=f"policy-{index:02d}")
    first = admin.get("/policies/").content.decode()
    assert "policy-24" in first and "policy-25" not in first
    assert 'href="?page=2" rel="next"' in first
    second = admin.get("/policies/?page=2").content.decode()
    assert "policy-25" in second and "policy-29" in second


def test_empty_state_says_to_add_a_connection_and_a_repository_first(admin: Client) -> None:
    html = admin.get("/policies/").content.decode()

    assert 'id="policy-empty"' in html
    assert "Create a policy" in html
    assert "a connection" in html and "a repository" in html


def test_empty_state_without_missing_prerequisites_only_offers_to_create(
    admin: Client, estate: dict[str, Any]
) -> None:
    estate["policy"].delete()

    html = admin.get("/policies/").content.decode()

    assert "Create a policy" in html
    assert "Before the first policy" not in html


def test_list_needs_a_role_and_viewers_see_no_actions(
    client: Client, logged_in: Any, new_user: Any
) -> None:
    policy = PolicyFactory(name="p1")
    logged_in("nobody")
    assert client.get("/policies/").status_code == 403

    client.logout()
    logged_in("vera", "viewer")
    html = client.get("/policies/").content.decode()
    assert "p1" in html
    assert "policy-run-now" not in html and "policy-toggle" not in html
    assert 'id="policy-new"' not in html
    assert client.post(f"/policies/{policy.pk}/run/").status_code == 403
    assert client.post(f"/policies/{policy.pk}/enabled/", {"enabled": "false"}).status_code == 403
    assert client.get(NEW).status_code == 403
    assert JobRun.objects.count() == 0


def test_operator_may_run_but_not_edit(client: Client, logged_in: Any) -> None:
    policy = PolicyFactory(name="p1")
    logged_in("otto", "operator")

    html = client.get("/policies/").content.decode()
    assert f'id="policy-run-now-{policy.pk}"' in html
    assert f'id="policy-toggle-{policy.pk}"' not in html

    page = client.get(f"/policies/{policy.pk}/").content.decode()
    assert 'id="policy-run-now"' in page
    assert "<fieldset disabled>" in page and 'id="policy-save"' not in page
    response = client.post(f"/policies/{policy.pk}/", form_data(policy.repository, name="x"))
    assert response.status_code == 403
    assert ProtectionPolicy.objects.get().name == "p1"


# --- actions -------------------------------------------------------------------------------------


def test_run_now_starts_a_manual_run_and_goes_to_its_page(admin: Client) -> None:
    from frontend.templatetags.console_tags import console_url

    policy = PolicyFactory()

    response = admin.post(f"/policies/{policy.pk}/run/")

    run = JobRun.objects.get()
    assert (run.policy, run.trigger, run.state) == (policy, Trigger.MANUAL, RunState.QUEUED)
    assert run.requested_by.username == "ada"
    assert response.status_code == 302
    assert response["Location"] == (console_url("run", run.pk) or f"/policies/{policy.pk}/")


def test_run_now_while_running_says_why_and_starts_nothing(admin: Client) -> None:
    policy = PolicyFactory()
    JobRun.objects.create(policy=policy, trigger=Trigger.MANUAL, state=RunState.WORKING)

    response = admin.post(f"/policies/{policy.pk}/run/", {"from": "list"}, follow=True)

    assert JobRun.objects.count() == 1
    assert "already running" in response.content.decode()


def test_enable_and_disable_with_htmx_swaps_the_row(admin: Client) -> None:
    policy = PolicyFactory(name="p1", enabled=True)

    response = admin.post(
        f"/policies/{policy.pk}/enabled/", {"enabled": "false"}, headers={"HX-Request": "true"}
    )

    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith(f'<tr id="policy-row-{policy.pk}"')
    assert "Disabled" in body and 'name="enabled" value="true"' in body
    policy.refresh_from_db()
    assert policy.enabled is False

    again = admin.post(f"/policies/{policy.pk}/enabled/", {"enabled": "true"})
    assert again.status_code == 302 and again["Location"] == "/policies/"
    policy.refresh_from_db()
    assert policy.enabled is True


# --- create and edit -----------------------------------------------------------------------------


def test_new_form_has_labelled_fields_the_previews_and_a_default_schedule(admin: Client) -> None:
    RepositoryFactory()

    html = admin.get(NEW).content.decode()

    assert 'id="policy-form"' in html
    for name in ("name", "repository", "keep_last", "keep_daily", "consistency", "rules-0-value"):
        assert f'for="id_{name}"' in html and f'id="id_{name}"' in html
    assert 'id="rule-preview"' in html and 'id="retention-preview"' in html
    assert re.search(r'<option value="0 22 \* \* \*" selected>Daily at 22:00</option>', html)


def test_create_through_the_form_saves_rules_schedules_retention_and_options(
    admin: Client,
) -> None:
    repository = RepositoryFactory()
    copy = RepositoryFactory()
    web = VirtualMachineFactory(name="web-1", tags=["web"])
    legacy = VirtualMachineFactory(name="legacy")
    VirtualMachineFactory(name="web-old", tags=["web"])

    response = admin.post(
        NEW,
        form_data(
            repository,
            vms=[str(legacy.pk)],
            **{
                "rules-TOTAL_FORMS": "2",
                "rules-0-value": "web",
                "rules-1-kind": "name_pattern",
                "rules-1-value": "*-old",
                "rules-1-exclude": "on",
                "keep_weekly": "4",
                "consistency": "crash",
                "transport_order": "nbd, nbdssl",
                "max_parallel_vms": "2",
                "copy_repository": str(copy.pk),
            },
        ),
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    policy = ProtectionPolicy.objects.get()
    assert response["Location"] == f"/policies/{policy.pk}/"
    assert sorted(policy.members.values_list("pk", flat=True)) == sorted([web.pk, legacy.pk])
    assert [(r.kind, r.value, r.exclude) for r in policy.rules.all()] == [
        ("tag", "web", False),
        ("name_pattern", "*-old", True),
    ]
    schedule = policy.schedules.get()
    assert (schedule.cron, schedule.timezone, schedule.enabled) == (
        "0 22 * * 1-5",
        "Europe/Berlin",
        True,
    )
    assert (policy.keep_last, policy.keep_daily, policy.keep_weekly) == (7, 14, 4)
    assert policy.options == {
        "consistency": "crash",
        "transport_order": ["nbd", "nbdssl"],
        "max_parallel_vms": 2,
    }
    assert policy.copy_repository == copy
    assert policy.repository == repository


def test_a_preset_schedule_is_saved_as_its_cron(admin: Client) -> None:
    repository = RepositoryFactory()

    admin.post(
        NEW, form_data(repository, **{"schedules-0-preset": "0 * * * *", "schedules-0-cron": ""})
    )

    assert Schedule.objects.get().cron == "0 * * * *"


@pytest.mark.parametrize(
    ("overrides", "field_id", "message"),
    [
        ({"schedules-0-cron": "0 0 30 2 *"}, "id_schedules-0-cron", "never fires"),
        ({"schedules-0-cron": "0 22 * *"}, "id_schedules-0-cron", "five fields"),
        (
            {"schedules-0-timezone": "Mars/Olympus"},
            "id_schedules-0-timezone",
            "not a known time zone",
        ),
        ({"keep_last": "0", "keep_daily": "0"}, "id_keep_last", "Retention keeps no restore point"),
        ({"keep_daily": "-1"}, "id_keep_daily", "greater than or equal to 0"),
        ({"rules-0-kind": "folder", "rules-0-value": ""}, "id_rules-0-value", "may not be blank"),
        ({"max_parallel_vms": "99"}, "id_max_parallel_vms", "from 1 to 64"),
        ({"transport_order": "nbd, carrier-pigeon"}, "id_transport_order", "distinct transports"),
        ({"name": ""}, "id_name", "may not be blank"),
        ({"repository": ""}, "id_repository", "required"),
    ],
)
def test_invalid_input_is_shown_next_to_its_field_and_saves_nothing(
    admin: Client, overrides: dict[str, str], field_id: str, message: str
) -> None:
    repository = RepositoryFactory()

    response = admin.post(NEW, form_data(repository, **overrides))

    assert response.status_code == 200
    html = response.content.decode()
    assert message in field_error(html, field_id)
    assert re.search(rf'aria-describedby="[^"]*\b{re.escape(field_id)}_error"', html)
    assert ProtectionPolicy.objects.count() == 0
    if "name" not in overrides:
        assert 'value="web-nightly"' in html, "what was typed is shown again"


def test_copy_to_the_same_repository_is_refused_by_the_service(admin: Client) -> None:
    repository = RepositoryFactory()

    html = admin.post(NEW, form_data(repository, copy_repository=str(repository.pk))).content
    assert "another repository" in field_error(html.decode(), "id_copy_repository")
    assert ProtectionPolicy.objects.count() == 0


def test_duplicate_name_is_refused(admin: Client) -> None:
    existing = PolicyFactory(name="web-nightly")

    html = admin.post(NEW, form_data(existing.repository)).content.decode()

    assert "already exists" in field_error(html, "id_name")
    assert ProtectionPolicy.objects.count() == 1


def test_edit_shows_the_saved_values_and_saves_changes(admin: Client) -> None:
    repository = RepositoryFactory()
    vm = VirtualMachineFactory(name="db-1", tags=["db"])
    policy = create_policy(
        data={"name": "db", "repository": repository, "keep_last": 3},
        vms=[],
        excluded_vms=[],
        rules=[{"kind": "tag", "value": "db", "exclude": False}],
        schedules=[{"cron": "15 3 * * *", "timezone": "Europe/Berlin", "enabled": True}],
        acting_user=None,
    )
    fired = datetime(2026, 1, 1, tzinfo=UTC)
    Schedule.objects.filter(policy=policy).update(last_fired_at=fired)

    page = admin.get(f"/policies/{policy.pk}/").content.decode()
    assert 'value="db"' in page and 'value="15 3 * * *"' in page
    assert 'name="rules-INITIAL_FORMS" value="1"' in page

    response = admin.post(
        f"/policies/{policy.pk}/",
        form_data(
            repository,
            name="db-renamed",
            keep_last="5",
            **{
                "rules-TOTAL_FORMS": "2",
                "rules-INITIAL_FORMS": "1",
                "rules-0-kind": "tag",
                "rules-0-value": "db",
                "rules-1-kind": "tag",
                "rules-1-value": "",
                "schedules-0-cron": "15 3 * * *",
                "schedules-0-timezone": "Europe/Berlin",
            },
        ),
    )

    assert response.status_code == 302
    policy.refresh_from_db()
    assert (policy.name, policy.keep_last) == ("db-renamed", 5)
    assert list(policy.members.all()) == [vm]
    # The unchanged schedule keeps its last firing (the service's rule).
    assert policy.schedules.get().last_fired_at == fired


def test_removing_a_rule_row_deletes_the_rule(admin: Client) -> None:
    repository = RepositoryFactory()
    policy = create_policy(
        data={"name": "p", "repository": repository},
        vms=[],
        excluded_vms=[],
        rules=[{"kind": "tag", "value": "db", "exclude": False}],
        schedules=[],
        acting_user=None,
    )

    admin.post(
        f"/policies/{policy.pk}/",
        form_data(
            repository,
            name="p",
            **{
                "rules-INITIAL_FORMS": "1",
                "rules-0-value": "db",
                "rules-0-DELETE": "on",
                "schedules-TOTAL_FORMS": "0",
                "schedules-INITIAL_FORMS": "0",
            },
        ),
    )

    assert policy.rules.count() == 0 and policy.schedules.count() == 0


def test_add_rule_and_add_schedule_rows_keep_what_was_typed_and_save_nothing(
    admin: Client,
) -> None:
    repository = RepositoryFactory()

    html = admin.post(
        NEW, form_data(repository, _add="schedule", **{"rules-0-value": "web"})
    ).content.decode()

    assert ProtectionPolicy.objects.count() == 0
    assert 'value="web-nightly"' in html and 'value="web"' in html
    assert 'name="schedules-TOTAL_FORMS" value="2"' in html
    assert 'name="rules-TOTAL_FORMS" value="2"' in html  # the filled rule and a blank one
    assert "invalid-feedback" not in html


# --- previews ------------------------------------------------------------------------------------


def test_rule_preview_lists_the_vms_the_typed_selection_matches(admin: Client) -> None:
    repository = RepositoryFactory()
    web1 = VirtualMachineFactory(name="web-1", tags=["web"])
    web2 = VirtualMachineFactory(name="web-2")
    VirtualMachineFactory(name="db-1", tags=["web"])
    VirtualMachineFactory(name="web-gone", present=False)

    response = admin.post(
        "/policies/preview/rules/",
        form_data(
            repository,
            **{
                "rules-TOTAL_FORMS": "3",
                "rules-0-kind": "tag",
                "rules-0-value": "web",
                "rules-1-kind": "name_pattern",
                "rules-1-value": "web-*",
                "rules-2-kind": "name_pattern",
                "rules-2-value": "db-*",
                "rules-2-exclude": "on",
            },
        ),
    )

    assert response.status_code == 200
    listed = [int(pk) for pk in re.findall(r'data-vm="(\d+)"', response.content.decode())]
    assert listed == [web1.pk, web2.pk]
    assert 'data-count="2"' in response.content.decode()


def test_rule_preview_shows_only_vms_the_user_may_see(client: Client, new_user: Any) -> None:
    from backupconsole.services import assign_role
    from tests.frontend.conftest import PASSWORD

    repository = RepositoryFactory()
    VirtualMachineFactory(name="web-1", tags=["web"])
    VirtualMachineFactory(name="web-secret", tags=["hidden"])
    user = new_user("scoped")
    for object_types, constraints in (
        (["inventory.virtualmachine"], {"tags__name": "web"}),
        (["jobs.protectionpolicy"], {}),
    ):
        assign_role(
            user=user,
            role="viewer",
            acting_user=None,
            object_types=object_types,
            constraints=constraints,
        )
    client.post("/login/", {"username": "scoped", "password": PASSWORD})

    html = client.post(
        "/policies/preview/rules/",
        form_data(repository, **{"rules-0-kind": "name_pattern", "rules-0-value": "web-*"}),
    ).content.decode()

    assert "web-1" in html and "web-secret" not in html
    assert "1 you may not see" in html


def test_retention_preview_marks_real_restore_points_keep_or_prune(admin: Client) -> None:
    repository = RepositoryFactory()
    vm = VirtualMachineFactory(name="web-1", tags=["web"])
    key = vm_key_for(vm)  # retention groups a VM's points by its repository key
    other_repo_point = RestorePointFactory(vm=vm, vm_key=key, repository=RepositoryFactory())
    now = timezone.now()
    points = [
        RestorePointFactory(
            vm=vm, vm_key=key, repository=repository, created_at=now - timedelta(days=d)
        )
        for d in range(5)
    ]
    protected = RestorePointFactory(
        vm=vm,
        vm_key=key,
        repository=repository,
        created_at=now - timedelta(days=30),
        protected=True,
    )

    response = admin.post(
        "/policies/preview/retention/",
        form_data(
            repository,
            keep_last="2",
            keep_daily="0",
            **{"rules-0-kind": "tag", "rules-0-value": "web"},
        ),
    )

    html = response.content.decode()
    marks = dict(re.findall(r'data-point="([^"]+)" data-mark="([^"]+)"', html))
    assert marks == {
        points[0].point_id: "keep",
        points[1].point_id: "keep",
        points[2].point_id: "remove",
        points[3].point_id: "remove",
        points[4].point_id: "remove",
        protected.point_id: "protected",
    }
    assert other_repo_point.point_id not in html
    assert 'data-kept="3"' in html and 'data-removed="3"' in html


def test_retention_preview_says_when_the_rule_keeps_nothing(admin: Client) -> None:
    html = admin.post(
        "/policies/preview/retention/",
        form_data(RepositoryFactory(), keep_last="0", keep_daily="0"),
    ).content.decode()

    assert "Retention keeps no restore point" in html


def test_schedule_preview_shows_the_next_three_times_or_the_error(admin: Client) -> None:
    repository = RepositoryFactory()

    html = admin.post(
        "/policies/preview/schedules/",
        form_data(
            repository,
            **{
                "schedules-TOTAL_FORMS": "2",
                "schedules-INITIAL_FORMS": "2",
                "schedules-0-preset": "0 * * * *",
                "schedules-0-timezone": "UTC",
                "schedules-1-cron": "0 0 30 2 *",
                "schedules-1-timezone": "UTC",
                "schedules-1-enabled": "on",
            },
        ),
    ).content.decode()

    now = timezone.now()
    first = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    expected = [(first + timedelta(hours=i)).isoformat() for i in range(3)]
    assert re.findall(r'<time datetime="([^"]+)"', html) == expected
    assert "never fires" in html


def test_previews_need_a_role(client: Client, logged_in: Any) -> None:
    logged_in("nobody")
    assert client.post("/policies/preview/rules/", {}).status_code == 403
