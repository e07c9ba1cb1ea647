import pytest

from backupconsole.models import AuditEvent
from jobs.models import ProtectionPolicy, Schedule
from tests.factories import RepositoryFactory, VirtualMachineFactory

URL = "/api/jobs/policies/"


@pytest.fixture
def repository(db):
    return RepositoryFactory()


def _body(repository, **overrides):
    return {
        "name": "nightly",
        "repository": repository.pk,
        "schedules": [{"cron": "0 22 * * 1-5", "timezone": "Europe/Berlin"}],
        "keep_last": 7,
        "keep_daily": 14,
        **overrides,
    }


def test_create_with_dynamic_selection_resolves_members(api, repository):
    web1 = VirtualMachineFactory(name="web-1", tags=["prod"])
    web2 = VirtualMachineFactory(name="web-2", tags=["prod"])
    VirtualMachineFactory(name="db-1", tags=["prod"])
    explicit = VirtualMachineFactory(name="legacy")
    body = _body(
        repository,
        vms=[explicit.pk],
        rules=[
            {"kind": "tag", "value": "prod"},
            {"kind": "name_pattern", "value": "db-*", "exclude": True},
        ],
        options={"consistency": "crash", "max_parallel_vms": 2},
    )
    response = api.post(URL, body, format="json")
    assert response.status_code == 201, response.data
    assert sorted(response.data["members"]) == sorted([web1.pk, web2.pk, explicit.pk])
    policy = ProtectionPolicy.objects.get()
    assert policy.schedules.get().timezone == "Europe/Berlin"
    vm = api.get(f"/api/inventory/vms/{web1.pk}/").data
    assert vm["policies"] == [policy.pk]
    event = AuditEvent.objects.get(action="jobs.policy.create")
    assert event.after["rules"][1] == {"kind": "name_pattern", "value": "db-*", "exclude": True}


def test_unprotected_filter_is_shared_by_the_vm_list(api, repository):
    protected = VirtualMachineFactory(name="web-1", tags=["prod"])
    VirtualMachineFactory(name="lonely")
    api.post(URL, _body(repository, rules=[{"kind": "tag", "value": "prod"}]), format="json")
    names = [v["name"] for v in api.get("/api/inventory/vms/?protected=false").data["results"]]
    assert names == ["lonely"]
    names = [v["name"] for v in api.get("/api/inventory/vms/?protected=true").data["results"]]
    assert names == [protected.name]


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"cron": "0 0 30 2 *", "timezone": "UTC"}, "never fires"),
        ({"cron": "61 * * * *", "timezone": "UTC"}, "not a valid cron"),
        ({"cron": "every day", "timezone": "UTC"}, "five fields"),
        ({"cron": "0 22 * * *", "timezone": "Mars/Olympus"}, "not a known time zone"),
    ],
)
def test_impossible_or_invalid_schedules_are_refused(api, repository, schedule, message):
    response = api.post(URL, _body(repository, schedules=[schedule]), format="json")
    assert response.status_code == 400
    assert message in str(response.data["schedules"])
    assert not ProtectionPolicy.objects.exists()


def test_leap_day_schedule_is_possible(api, repository):
    body = _body(repository, schedules=[{"cron": "0 3 29 2 *", "timezone": "UTC"}])
    assert api.post(URL, body, format="json").status_code == 201


def test_zero_retention_is_refused(api, repository):
    body = _body(repository, keep_last=0, keep_daily=0)
    response = api.post(URL, body, format="json")
    assert response.status_code == 400
    assert "keeps no restore point" in response.data["keep_last"][0]


def test_zero_retention_is_refused_on_update_too(api, repository):
    created = api.post(URL, _body(repository, keep_daily=0), format="json").data
    response = api.patch(f"{URL}{created['id']}/", {"keep_last": 0}, format="json")
    assert response.status_code == 400
    assert ProtectionPolicy.objects.get().keep_last == 7


def test_missing_repository_is_refused_in_words(api):
    response = api.post(URL, _body(RepositoryFactory.build(pk=4242)), format="json")
    assert response.status_code == 400
    assert response.data["repository"] == ["Repository 4242 does not exist."]


def test_copy_to_the_same_repository_is_refused(api, repository):
    response = api.post(URL, _body(repository, copy_repository=repository.pk), format="json")
    assert response.status_code == 400
    assert "another repository" in response.data["copy_repository"][0]


@pytest.mark.parametrize(
    "options",
    [
        {"consistency": "perfect"},
        {"transport_order": ["nbd", "nbd"]},
        {"transport_order": ["carrier-pigeon"]},
        {"max_parallel_vms": 0},
        {"bandwidth_limit_mbps": -5},
        {"turbo": True},
    ],
)
def test_bad_options_are_refused(api, repository, options):
    response = api.post(URL, _body(repository, options=options), format="json")
    assert response.status_code == 400
    assert "options" in response.data


def test_editing_a_policy_keeps_an_unchanged_schedules_last_firing(api, repository):
    created = api.post(URL, _body(repository), format="json").data
    schedule = Schedule.objects.get()
    Schedule.objects.filter(pk=schedule.pk).update(last_fired_at="2026-01-01T00:00:00Z")
    body = {"schedules": [{"cron": "0 22 * * 1-5", "timezone": "Europe/Berlin"}]}
    assert api.patch(f"{URL}{created['id']}/", body, format="json").status_code == 200
    assert Schedule.objects.get().last_fired_at.year == 2026


def test_operator_may_run_but_not_edit(api, api_as, repository):
    created = api.post(URL, _body(repository), format="json").data
    operator = api_as("olga", "operator")
    assert (
        operator.patch(f"{URL}{created['id']}/", {"keep_last": 3}, format="json").status_code == 403
    )
    response = operator.post(f"{URL}{created['id']}/run/")
    assert response.status_code == 202
    assert response.data["state"] == "queued" and response.data["trigger"] == "api"
    viewer = api_as("victor", "viewer")
    assert viewer.post(f"{URL}{created['id']}/run/").status_code == 403


def test_a_second_run_while_one_is_active_is_refused(api, repository):
    created = api.post(URL, _body(repository), format="json").data
    assert api.post(f"{URL}{created['id']}/run/").status_code == 202
    response = api.post(f"{URL}{created['id']}/run/")
    assert response.status_code == 400
    assert "already running" in response.data["non_field_errors"][0]
