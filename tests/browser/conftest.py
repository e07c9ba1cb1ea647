"""Fixtures for end-to-end tests in headless Chromium (Debian's package, driven by Playwright).

``console`` is the real server (uvicorn + Channels on Redis, see server.py) on the pytest-django
test database; tests use ``transactional_db`` so what they write is visible to it and to the real
Celery workers (``celery_worker_process``). ``page`` is a fresh 1280x800 browser tab; ``kvm_vms``
two small running VMs on the private libvirtd of tests/kvm.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from inventory.kvm.libvirt_env import define_test_domain, disk_aliases, remove_domain
from tests.browser.server import ASYNC_UNSAFE, ConsoleServer
from tests.kvm.conftest import libvirt_conn, libvirt_env  # noqa: F401 - fixtures, reused
from tests.unavailable import unavailable

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, ViewportSize

# Debian's binary itself, not the /usr/bin/chromium wrapper script (see docs: shared notes).
CHROMIUM = Path("/usr/lib/chromium/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
TIMEOUT_MS = 20_000
T = TypeVar("T")
MiB = 1024 * 1024
VM_DISK_SIZE = 32 * MiB


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Like tests/integration: PostgreSQL, Redis, worker processes (`-m "not integration"`).
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="package")
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing (run .ci/browser-packages as root)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API marks its event loop as running in this thread between calls, so
    # Django would refuse every ORM call of the tests and of pytest-django's flush. The console
    # server, the one truly async process, never gets this variable (server.py drops it).
    os.environ[ASYNC_UNSAFE] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        os.environ.pop(ASYNC_UNSAFE, None)


@pytest.fixture(scope="package")
def console(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleServer]:
    """The console on 127.0.0.1:<free port>, for every browser test of the session."""
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        unavailable("browser tests need PostgreSQL (DATABASE_URL): the server is another process")
    if not settings.REDIS_URL:
        unavailable("browser tests need Redis (REDIS_URL): live updates cross processes")
    import redis

    # Groups outlive their members by a day in Redis: start without another session's leftovers.
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    server = ConsoleServer(tmp_path_factory.mktemp("console")).start()
    yield server
    server.stop()


@pytest.fixture
def page(
    chromium: Browser,
    console: ConsoleServer,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> Iterator[Page]:
    """A fresh tab (own cookies) on the console; a JavaScript error on any page fails the test,
    and a failing test leaves a screenshot and the server log in its tmp_path."""
    from playwright.sync_api import expect

    context = chromium.new_context(
        base_url=console.url, viewport=VIEWPORT, color_scheme="light", timezone_id="UTC"
    )
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    if request.node.stash.get(_FAILED, False):
        tab.screenshot(path=tmp_path / "failure.png", full_page=True)
        (tmp_path / "server.log").write_text(console.log_tail(20_000))
        print(f"browser: screenshot and server log in {tmp_path}")
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(autouse=True)
def _transactional(transactional_db: None) -> None:
    """Every browser test commits what it writes: the server and the workers are other
    processes. (``make_user``/``admin_user`` of tests/conftest.py make the users.)"""


def log_in(page: Page, username: str, password: str | None = None) -> None:
    """Sign in through the login form, as a person would."""
    from playwright.sync_api import expect

    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password or "pw-" + username)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-errors")).to_have_count(0)
    page.wait_for_url(lambda url: "/login/" not in url)


class KvmVm:
    def __init__(self, domain: Any, disks: list[Path]) -> None:
        self.domain = domain
        self.disks = disks  # qcow2 images, in target order (sda, sdb)
        self.aliases = disk_aliases(domain)

    @property
    def name(self) -> str:
        return str(self.domain.name())


@pytest.fixture
def vm_prefix() -> str:
    """Unique per test: the session's libvirtd may still hold an earlier test's domains."""
    return f"e2e-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def lifelike_disks() -> bool:
    """False: the VMs' disks start empty. A module sets it True for disks that start with random
    and text-like data (realistic dedup and compression figures, as in the screenshots)."""
    return False


@pytest.fixture
def kvm_vms(
    libvirt_conn: Any,  # noqa: F811
    vm_prefix: str,
    lifelike_disks: bool,
    tmp_path: Path,
) -> Iterator[list[KvmVm]]:
    """Two running TCG VMs, ``<prefix>-01`` and ``<prefix>-02`` (the rule ``<prefix>-*`` selects
    both), each with two 32 MiB qcow2 disks holding a few MiB the guest wrote."""
    from inventory.kvm.libvirt_env import guest_flush, guest_write
    from tests.storage.helpers import make_image

    vms: list[KvmVm] = []
    try:
        for number in (1, 2):
            workdir = tmp_path / f"vm{number}"
            workdir.mkdir()
            disks = [workdir / "disk0.qcow2", workdir / "disk1.qcow2"]
            if lifelike_disks:
                for seed, disk in enumerate(disks, start=10 * number):
                    raw = disk.with_suffix(".raw")
                    make_image(raw, VM_DISK_SIZE, seed=seed)
                    subprocess.run(
                        ["qemu-img", "convert", "-q", "-O", "qcow2", str(raw), str(disk)],
                        check=True,
                    )
                    raw.unlink()
            domain = define_test_domain(
                libvirt_conn, f"{vm_prefix}-{number:02d}", disks, workdir, disk_size=VM_DISK_SIZE
            )
            vm = KvmVm(domain, disks)
            vms.append(vm)
            for index, alias in enumerate(vm.aliases):
                guest_write(domain, alias, index * MiB, 6 * MiB, 0x40 + 16 * number + index)
                guest_flush(domain, alias)
        yield vms
    finally:
        for vm in vms:
            remove_domain(vm.domain)


def off_the_loop(function: Callable[..., T], *args: Any) -> T:
    """Call ``function`` in another thread, with its own database connection. Code that
    publishes progress (async_to_sync) cannot run in this thread, where Playwright's event
    loop counts as running."""
    from django.db import connections

    def call() -> T:
        try:
            return function(*args)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


def raw_image(disk: Path, out: Path) -> Path:
    """The qcow2 disk's content as a raw file (``-U``: the VM keeps it open)."""
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(disk), str(out)], check=True)
    return out


def vm_pattern(vms: list[KvmVm]) -> str:
    """The name pattern (a dynamic rule) that matches exactly the fixture's VMs."""
    return vms[0].name.rsplit("-", 1)[0] + "-*"


# --- an estate made through the services, for tests whose subject is a later step -------------


@pytest.fixture
def kvm_connection(libvirt_env: Any, kvm_vms: list[KvmVm], admin_user: Any) -> Any:  # noqa: F811
    """The private libvirtd as a KVM connection, synced (its two VMs are in the inventory)."""
    from inventory import services as inventory_services
    from inventory.tasks import sync_connection

    connection = inventory_services.create_connection(
        data={"name": "kvm-lab", "kind": "kvm", "address": str(libvirt_env.socket_path)},
        secret="",
        acting_user=admin_user,
    )
    sync_connection(connection.pk)
    return connection


@pytest.fixture
def repository(admin_user: Any, tmp_path: Path) -> Any:
    from storage import services as storage_services

    return storage_services.create_repository(
        data={"name": "primary", "kind": "filesystem", "location": str(tmp_path / "repo")},
        secret="",
        passphrase="e2e passphrase",
        acting_user=admin_user,
    )


@pytest.fixture
def policy(kvm_connection: Any, kvm_vms: list[KvmVm], repository: Any, admin_user: Any) -> Any:
    """A policy whose dynamic rule (a name pattern) selects both VMs."""
    from jobs import services

    return services.create_policy(
        data={"name": "nightly-web", "repository": repository, "options": {"consistency": "crash"}},
        vms=[],
        excluded_vms=[],
        rules=[{"kind": "name_pattern", "value": vm_pattern(kvm_vms)}],
        schedules=[],
        acting_user=admin_user,
    )


@pytest.fixture
def backed_up(celery_worker_process: Any, policy: Any, admin_user: Any) -> Any:
    """A finished, successful run of ``policy`` (executed in this process). Requests
    ``celery_worker_process`` first so that its broker flush drops the queued copy of the run."""
    from jobs import engine, services
    from jobs.choices import RunResult, Trigger

    run = services.start_run(policy, trigger=Trigger.MANUAL, acting_user=admin_user)
    off_the_loop(engine.execute_run, run.pk)
    run.refresh_from_db()
    assert run.result == RunResult.SUCCEEDED, run.reason
    return run
