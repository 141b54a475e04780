"""Engines of several apps: turns under ``parallel``, and a reload's changes."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.internet.defer import CancelledError, succeed
from twisted.internet.task import Clock

from ghhook.config import AppSettings, DaemonSettings
from ghhook.cycle import STEP_GROUP
from ghhook.deployer import Deployer, Submission, kill_orphans_of_removed_apps
from ghhook.engines import Engines, Slots
from ghhook.journal import Journal
from ghhook.results import Result
from ghhook.service import GhhookService
from tests.fakes import FakeRunner, fill_disk

A, B, C = ("a" * 40, "b" * 40, "c" * 40)


def app_settings(tmp_path: Path, name: str, clone: str | None = None) -> AppSettings:
    """An app on the clone ``tmp_path/clone`` (its name by default)."""
    git_dir = tmp_path / (clone or name) / ".git"
    git_dir.mkdir(parents=True, exist_ok=True)
    (git_dir / "HEAD").write_text("ref: refs/heads/main\n")
    return AppSettings(
        repo=str(tmp_path / (clone or name)),
        git_dir=str(git_dir),
        remote="origin",
        branch="main",
        git="/usr/bin/git",
        name=name,
        restart=(f"/bin/restart-{name}",),
        env={"PATH": "/usr/bin"},
    )


class Host:
    """Engines over fake runners (one per app, as each app has its clone)."""

    def __init__(self, tmp_path: Path, names: list[str], parallel: int) -> None:
        self.tmp_path = tmp_path
        self.clock = Clock()
        self.journal = Journal(tmp_path / "j.sqlite3").open()
        self.runners: dict[str, FakeRunner] = {}
        #: The most deploys seen running at once.
        self.most = 0
        settings = DaemonSettings(
            apps=tuple(app_settings(tmp_path, name) for name in names), parallel=parallel
        )
        self.engines = Engines(settings, self.make)

    def make(self, app: AppSettings, slots: Slots) -> Deployer:
        # One runner per clone: it fails the test if two steps ever overlap there.
        runner = self.runners.setdefault(Path(app.repo).name, FakeRunner(head=A))
        return Deployer(
            app, runner, self.journal, self.clock, wall_clock=self.clock.seconds, slots=slots
        )

    def turn(self) -> None:
        self.clock.advance(0)
        self.most = max(self.most, self.engines.running)

    def engine(self, name: str) -> Deployer:
        engine = self.engines.get(name)
        assert engine is not None
        return engine

    def settings(self, names: list[str], parallel: int | None = None) -> DaemonSettings:
        return attrs.evolve(
            self.engines.settings,
            apps=tuple(app_settings(self.tmp_path, name) for name in names),
            parallel=self.engines.settings.parallel if parallel is None else parallel,
        )

    def results(self, name: str) -> list[str]:
        return [d["result"] for d in self.journal.for_app(name).recent_deploys()]


def test_slots_are_handed_out_in_arrival_order_up_to_the_limit() -> None:
    slots = Slots(2)
    got: list[str] = []
    for name in "abcd":
        slots.acquire().addCallback(lambda _, name=name: got.append(name))
    assert got == ["a", "b"] and slots.waiting == 2
    slots.release()
    assert got == ["a", "b", "c"]
    slots.release()
    slots.release()
    assert got == ["a", "b", "c", "d"] and slots.taken == 1


def test_a_cancelled_wait_gives_up_its_turn() -> None:
    slots = Slots(1)
    slots.acquire()
    waiting = slots.acquire()
    failures: list[object] = []
    waiting.addErrback(lambda f: failures.append(f.trap(CancelledError)))
    waiting.cancel()
    assert failures == [CancelledError] and slots.waiting == 0
    slots.release()
    assert slots.taken == 0


def test_resizing_slots_hands_out_at_once_or_waits_for_running_ones() -> None:
    slots = Slots(1)
    got: list[int] = []
    for n in range(3):
        slots.acquire().addCallback(lambda _, n=n: got.append(n))
    slots.resize(2)
    assert got == [0, 1]
    slots.resize(1)
    slots.release()
    assert got == [0, 1], "two run, the limit is one: nothing more until one ends"
    slots.release()
    assert got == [0, 1, 2]


def test_no_more_than_parallel_deploys_run_and_turns_follow_arrival(tmp_path: Path) -> None:
    host = Host(tmp_path, ["blog", "api", "shop"], parallel=1)
    host.engines.start()
    host.turn()
    assert host.engines.running == 1
    assert host.runners["blog"].names() == ["pull"]
    assert host.runners["api"].names() == [] and host.engine("api").waiting
    host.runners["blog"].pull_to(A)
    host.turn()
    assert host.runners["api"].names() == ["pull"] and host.runners["shop"].names() == []
    host.runners["api"].pull_to(A)
    host.turn()
    host.runners["shop"].pull_to(A)
    host.turn()
    assert host.most == 1
    assert [host.results(name) for name in ("blog", "api", "shop")] == [["unchanged"]] * 3


def test_pushes_coalesce_while_their_app_waits_for_a_turn(tmp_path: Path) -> None:
    host = Host(tmp_path, ["blog", "api"], parallel=1)
    host.engines.start()
    host.turn()
    api = host.engine("api")
    first = api.submit(B, "d-1")
    second = api.submit(C, "d-2")
    assert isinstance(first, Submission) and isinstance(second, Submission)
    assert api.pending is not None and api.pending.trigger == "catch-up"
    assert first.coalesced and second.coalesced
    assert first.deploy == second.deploy == api.pending.id
    assert api.pending.shas == [None, B, C]
    host.runners["blog"].pull_to(A)
    host.turn()
    host.runners["api"].pull_to(C)
    host.turn()
    assert host.runners["api"].names() == ["pull", "restart"]
    host.runners["api"].outstanding.finish(0, "")  # type: ignore[union-attr]
    host.turn()
    assert host.results("api") == ["deployed"]
    assert host.most == 1


def test_a_reload_adds_an_app_with_its_catch_up(tmp_path: Path) -> None:
    host = Host(tmp_path, ["blog"], parallel=2)
    host.engines.start()
    host.turn()
    changes = host.engines.apply(host.settings(["blog", "api"]))
    assert changes == ["app api added"]
    host.turn()
    assert host.runners["api"].names() == ["pull"]
    assert host.engines.running == 2


def test_a_removed_app_finishes_its_deploy_and_its_pending_one_is_cancelled(
    tmp_path: Path,
) -> None:
    host = Host(tmp_path, ["blog", "api"], parallel=2)
    host.engines.start()
    host.turn()
    api = host.engine("api")
    sub = api.submit(B, "d-1")
    assert isinstance(sub, Submission)
    changes = host.engines.apply(host.settings(["blog"]))
    assert changes == ["app api removed"]
    assert host.engines.get("api") is None
    assert host.engines.running == 2, "the removed app's running deploy goes on"
    rows = {d["id"]: d for d in host.journal.for_app("api").recent_deploys()}
    assert rows[sub.deploy]["result"] == Result.CANCELLED
    host.runners["api"].pull_to(A)
    host.turn()
    assert host.engines.running == 1
    assert api.pending is None and host.runners["api"].names() == ["pull"]


def test_a_cancelled_deploy_is_recorded_once_the_journal_takes_it(tmp_path: Path) -> None:
    host = Host(tmp_path, ["blog", "api"], parallel=1)
    host.engines.start()
    host.turn()
    api = host.engine("api")
    assert api.pending is not None
    waiting = api.pending.id
    disk = fill_disk(host.journal)
    disk.full = True
    host.engines.apply(host.settings(["blog"]))
    disk.full = False
    host.clock.advance(5.0)
    rows = {d["id"]: d for d in host.journal.for_app("api").recent_deploys()}
    assert rows[waiting]["result"] == Result.CANCELLED
    # The removed app gave up its wait: blog's next deploy is not held back.
    host.runners["blog"].pull_to(A)
    host.turn()
    assert host.engines.slots.taken == 0


def test_a_changed_app_uses_its_new_settings_from_its_next_deploy(tmp_path: Path) -> None:
    host = Host(tmp_path, ["blog"], parallel=1)
    host.engines.start()
    host.turn()
    new = host.settings(["blog"])
    new = attrs.evolve(new, apps=(attrs.evolve(new.apps[0], restart=("/bin/new-restart",)),))
    assert host.engines.apply(new) == ["app blog changed; its next deploy uses the new settings"]
    host.runners["blog"].pull_to(B)  # the catch-up started with the old settings
    host.turn()
    assert host.runners["blog"].calls[-1].argv == ("/bin/restart-blog",)
    host.runners["blog"].calls[-1].finish(0, "")
    host.turn()
    host.engine("blog").submit(C, "d-1")
    host.turn()
    host.runners["blog"].pull_to(C)
    host.turn()
    assert host.runners["blog"].calls[-1].argv == ("/bin/new-restart",)


def test_a_reload_that_raises_parallel_starts_waiting_deploys(tmp_path: Path) -> None:
    host = Host(tmp_path, ["blog", "api"], parallel=1)
    host.engines.start()
    host.turn()
    assert host.engines.running == 1
    assert host.engines.apply(host.settings(["blog", "api"], parallel=2)) == ["parallel is now 2"]
    host.turn()
    assert host.engines.running == 2


@pytest.mark.parametrize("names", [["blog"], ["blog", "api", "shop"]])
def test_stop_ends_waiting_and_running_engines(tmp_path: Path, names: list[str]) -> None:
    host = Host(tmp_path, names, parallel=1)
    host.engines.start()
    host.turn()
    stopped: list[None] = []
    host.engines.stop().addCallback(stopped.append)
    assert stopped == [None]
    assert host.engines.slots.waiting == 0


def test_a_reload_logs_what_only_a_restart_applies(tmp_path: Path) -> None:
    host = Host(tmp_path, ["blog"], parallel=1)
    old = host.engines.settings
    new = attrs.evolve(
        old,
        listen=("tcp:8001",),
        path="/hook",
        limits=attrs.evolve(old.limits, max_inflight=1024),
        keep_deploys=5,
    )
    assert host.engines.apply(new) == [
        "listen changed; it applies at the next start, not now",
        "path changed; it applies at the next start, not now",
        "max_inflight changed; it applies at the next start, not now",
    ]
    kept = host.engines.settings
    assert (kept.listen, kept.path, kept.limits) == (old.listen, old.path, old.limits)
    assert kept.keep_deploys == 5
    assert host.engines.apply(new) == [
        "listen changed; it applies at the next start, not now",
        "path changed; it applies at the next start, not now",
        "max_inflight changed; it applies at the next start, not now",
    ], "a later reload still says so"


def test_an_app_removed_and_added_back_mid_deploy_keeps_its_engine(tmp_path: Path) -> None:
    host = Host(tmp_path, ["blog"], parallel=2)
    host.engines.start()
    host.turn()
    blog = host.engine("blog")
    host.runners["blog"].pull_to(B)  # the catch-up pulled B: now it restarts
    host.turn()
    restart = host.runners["blog"].outstanding
    assert restart is not None and restart.name == "restart"
    host.engines.apply(host.settings([]))
    assert host.engines.apply(host.settings(["blog"])) == [
        "app blog added back; its running deploy goes on"
    ]
    assert host.engine("blog") is blog, "no second engine on the clone"
    assert host.runners["blog"].interrupted == [], "nothing was killed"
    restart.finish(0, "")
    host.turn()
    assert host.results("blog")[-1] == "deployed"
    assert blog.pending is None and host.runners["blog"].names()[-1] == "pull", "it caught up"


def test_a_renamed_app_waits_for_the_deploy_of_its_old_name(tmp_path: Path) -> None:
    host = Host(tmp_path, ["blog"], parallel=2)
    host.engines.start()
    host.turn()
    host.runners["blog"].pull_to(B)
    host.turn()
    restart = host.runners["blog"].outstanding
    assert restart is not None
    new = attrs.evolve(host.engines.settings, apps=(app_settings(tmp_path, "site", clone="blog"),))
    assert host.engines.apply(new) == ["app site added", "app blog removed"]
    host.turn()
    assert host.runners["blog"].outstanding is restart, "site starts nothing in the clone yet"
    site = host.engine("site")
    assert site.pending is not None and site.running is None
    restart.finish(0, "")
    host.turn()
    assert host.runners["blog"].outstanding is not None
    assert host.runners["blog"].outstanding.name == "pull", "then site catches up"
    assert host.results("blog") == ["deployed"], "blog's deploy was not cut off"


def test_a_journal_fault_in_a_reload_loses_no_engine_and_the_catch_up_comes_later(
    tmp_path: Path,
) -> None:
    host = Host(tmp_path, ["blog"], parallel=2)
    host.engines.start()
    host.turn()
    host.runners["blog"].pull_to(A)
    host.turn()
    disk = fill_disk(host.journal)
    disk.full = True
    changes = host.engines.apply(host.settings(["blog", "api"]))
    assert changes == ["app api added"], "the reload is applied, not half-applied"
    api = host.engine("api")
    assert api.pending is None, "the journal refused the catch-up"
    disk.full = False
    host.clock.advance(5.0)
    host.turn()
    assert host.runners["api"].names() == ["pull"], "the catch-up came once the journal took it"


def test_kill_orphans_of_removed_apps_kills_a_renamed_apps_step(tmp_path: Path) -> None:
    site = app_settings(tmp_path, "site", clone="blog")
    orphan = subprocess.Popen(["sleep", "30"], cwd=site.repo, start_new_session=True)
    elsewhere = subprocess.Popen(["sleep", "30"], cwd=tmp_path, start_new_session=True)
    try:
        journal = Journal(tmp_path / "j.sqlite3").open()
        # The previous run, with [apps.blog] and [apps.gone], was SIGKILLed mid-step.
        journal.put(STEP_GROUP, str(orphan.pid), app="blog")
        journal.put(STEP_GROUP, str(elsewhere.pid), app="gone")
        kill_orphans_of_removed_apps(journal, [site])
        assert orphan.wait(timeout=10) == -signal.SIGKILL
        assert elsewhere.poll() is None, "a pid working outside the clones is not ours"
        assert journal.values(STEP_GROUP) == {}
    finally:
        for process in (orphan, elsewhere):
            process.kill()
            process.wait()


def test_an_app_added_on_the_clone_another_app_leaves_waits_for_its_deploy(
    tmp_path: Path,
) -> None:
    """blog moves to another clone while it deploys; api, added on blog's old clone, must wait."""
    host = Host(tmp_path, ["blog"], parallel=2)
    host.engines.start()
    host.turn()
    host.runners["blog"].pull_to(B)
    host.turn()
    restart = host.runners["blog"].outstanding
    assert restart is not None and restart.name == "restart"
    moved = attrs.evolve(app_settings(tmp_path, "blog", clone="blog2"))
    new = attrs.evolve(
        host.engines.settings, apps=(moved, app_settings(tmp_path, "api", clone="blog"))
    )
    host.engines.apply(new)  # valid: two apps, two clones
    host.turn()
    # FakeRunner("blog") asserts if a step starts in the clone while another runs there;
    # the engine turns that AssertionError into a failed deploy.
    assert host.runners["blog"].outstanding is restart
    assert host.results("api") == ["queued"], host.results("api")


def test_stop_leaves_no_retry_timer_of_a_removed_app(tmp_path: Path) -> None:
    """A removed app's engine stays to be stopped until its outcomes are written."""
    host = Host(tmp_path, ["blog", "api"], parallel=1)
    host.engines.start()
    host.turn()
    api = host.engine("api")
    assert api.pending is not None
    disk = fill_disk(host.journal)
    disk.full = True
    host.engines.apply(host.settings(["blog"]))
    stopped: list[None] = []
    host.engines.stop().addCallback(stopped.append)
    assert stopped == [None]
    left = [c for c in host.clock.getDelayedCalls() if c.active()]
    assert left == [], f"timers outlive the stop: {left}"


def test_a_reload_during_the_stop_starts_no_deploy(tmp_path: Path) -> None:
    host = Host(tmp_path, ["blog"], parallel=2)
    host.engines.start()
    host.turn()
    blog = host.runners["blog"]
    pull = blog.outstanding
    assert pull is not None and pull.name == "pull"
    # The real ProcessRunner lets the step run up to STOP_GRACE: it does not end at once.
    blog.interrupt = lambda grace: succeed(None)  # type: ignore[method-assign]
    new = host.settings(["blog", "api"])
    service = GhhookService(host.journal, host.engines, host.clock, load=lambda: new)
    stopped: list[Any] = []
    service.stopService().addBoth(stopped.append)
    assert stopped == [], "blog's pull still runs"
    service.signals.handle(
        signal.SIGHUP
    )  # SIGHUP arrives: the handlers are uninstalled only at the end
    host.turn()
    api = host.engine("api") if host.engines.get("api") else None
    assert "api" not in host.runners or host.runners["api"].calls == [], (
        "a deploy started after the stop began, and stop() will not wait for it: "
        + str(host.runners["api"].names())
    )
    assert api is None or api.running is None
    pull.finish(0, "")
    host.turn()
    assert stopped == [None]
