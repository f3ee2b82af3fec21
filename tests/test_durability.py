"""What keeps a media from staying PROCESSING, tested without workers: exact status when
two runs finish together, provider limits in any window, the reconciler's rules, and the
CLI's answer to bad ids. The same properties end to end are in tests/test_drills.py."""

from __future__ import annotations

import contextvars
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect.client.schemas.objects import FlowRun, State, StateType, Worker
from sqlalchemy import event, select, update
from typer.testing import CliRunner

from db.jobs import finish_job, start_jobs
from db.models import JobState, MediaStatus, OutboxRun, ProcessingJob, ProviderCall
from db.repository import load_media, lock_media
from db.session import get_engine, session_scope, transaction
from deployments.cli.app import app
from deployments.operations.reconciler import Reconciler
from deployments.operations.registration import register_media
from deployments.operations.run_health import MARK, diagnose, fault_in_a_row
from deployments.operations.setup import setup
from flows.runner import run_core
from media_pipeline.settings import get_settings
from tasks.table import JOB_TABLE
from tests.support.media import make_jpeg, make_tone

cli = CliRunner()
T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
STALL = timedelta(seconds=45)


def test_media_status_is_exact_when_two_runs_finish_together(app_db, tmp_path: Path):
    note = make_tone(tmp_path / "a.wav", 1.0)
    jobs = ["generate-waveform", "transcribe-audio"]
    for trial in range(15):
        media = register_media(note, category="AUTRE")
        run = f"run-{trial}"
        transaction(lambda session, m=media, r=run: start_jobs(session, m.id, jobs, r))
        barrier = threading.Barrier(2)

        def finish(
            job: str, media_id: uuid.UUID = media.id, barrier: threading.Barrier = barrier
        ) -> None:
            def work(session) -> None:  # type: ignore[no-untyped-def]
                barrier.wait(10)  # both transactions open before either writes
                finish_job(session, media_id, job, JobState.FAILED, error="broken")

            transaction(work)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(finish, jobs))
        with session_scope() as session:
            assert load_media(session, media.id).status is MediaStatus.FAILED, trial


def test_a_media_row_is_locked_once_per_transaction_and_again_in_the_next(app_db, tmp_path):
    media = register_media(make_jpeg(tmp_path / "p.jpg", 64, 48), category="AUTRE")
    updates: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("UPDATE MEDIA"):
            updates.append(statement)

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", count)
    try:
        transaction(lambda session: (lock_media(session, media.id), lock_media(session, media.id)))
        assert len(updates) == 1
        transaction(lambda session: lock_media(session, media.id))  # the first lock ended
        assert len(updates) == 2
    finally:
        event.remove(engine, "before_cursor_execute", count)


@pytest.mark.usefixtures("prefect_server")
def test_provider_calls_hold_in_any_window_across_workers(
    postgres_app_db, fake_providers, monkeypatch, tmp_path: Path
):
    limit, window = 3, 3.0
    monkeypatch.setenv("MEDIA_PIPELINE_OPENAI_CALLS_PER_MINUTE", str(limit))
    monkeypatch.setenv("MEDIA_PIPELINE_RATE_WINDOW_SECONDS", str(window))
    get_settings.cache_clear()
    note = make_tone(tmp_path / "a.wav", 1.0, rate=16000)
    media = [register_media(note, category="AUTRE") for _ in range(7)]

    # Seven jobs at once, each with its own database connections, as on seven workers.
    with ThreadPoolExecutor(7) as pool:
        job, settings = JOB_TABLE.get("transcribe-audio"), get_settings()
        outputs = list(pool.map(lambda m: run_core(job, m.id, settings), media))

    assert [o.outputs[0].version for o in outputs] == [1] * 7
    times = sorted(call.received for call in fake_providers.calls("openai"))
    assert len(times) == 7
    # Any limit + 1 calls in a row span at least the window: never more than 3 in 3 s.
    spans = [times[i + limit] - times[i] for i in range(len(times) - limit)]
    assert min(spans) >= window - 0.05, spans
    assert times[limit - 1] - times[0] < 1.0  # the first three were not held back
    assert times[-1] - times[0] < 2 * window + 2.0  # nor the others, beyond the window
    with session_scope() as session:  # the calls still in the window, as the metric reads them
        waits = sorted(session.scalars(select(ProviderCall.waited_seconds)))
    assert 0 < len(waits) <= limit and max(waits) > window - 1  # held back, and it shows


def run_in(
    state: StateType, at: datetime, worker: str | None = "w1", deployed: bool = True
) -> FlowRun:
    return FlowRun(
        id=uuid.uuid4(),
        flow_id=uuid.uuid4(),
        name="media · 12345678 · high",
        deployment_id=uuid.uuid4() if deployed else None,
        state=State(type=state, timestamp=at),
        labels={"prefect.worker.name": worker} if worker else {},
    )


def worker(name: str, last: datetime, interval: int = 10) -> Worker:
    return Worker(
        name=name,
        work_pool_id=uuid.uuid4(),
        last_heartbeat_time=last,
        heartbeat_interval_seconds=interval,
    )


def test_reconciler_finds_every_kind_of_stranded_run():
    alive = {"w1": worker("w1", T0 + timedelta(seconds=115))}
    dead = {"w1": worker("w1", T0 + timedelta(seconds=60))}
    moment = T0 + timedelta(seconds=120)

    def why(
        run: FlowRun, workers: dict, heartbeat: datetime | None = None, up_since: datetime = T0
    ) -> str | None:
        return diagnose(run, workers, heartbeat, moment, up_since, STALL)

    # Claimed by a worker that died (silent for 60 s), before and after it started the run.
    claimed = T0 + timedelta(seconds=30)
    assert "sent no heartbeat for 45 s" in why(run_in(StateType.PENDING, claimed), dead)
    assert "sent no heartbeat" in why(run_in(StateType.RUNNING, claimed), dead)
    # A state change is news of its worker too.
    assert why(run_in(StateType.RUNNING, moment - timedelta(seconds=5)), dead) is None
    # Claimed, never started, by a worker that looks alive (restarted under its name).
    assert "not started for 45 s" in why(run_in(StateType.PENDING, T0), alive)
    assert why(run_in(StateType.PENDING, moment - timedelta(seconds=10)), alive) is None
    # Running with a live worker: only a silent run (no flow-run heartbeat) is stranded.
    assert "no heartbeat from the run" in why(run_in(StateType.RUNNING, T0 - STALL), alive)
    recent = moment - timedelta(seconds=20)
    assert why(run_in(StateType.RUNNING, T0 - STALL), alive, heartbeat=recent) is None
    # Ended without recording its jobs; waiting runs are left alone.
    assert "ended Crashed" in why(run_in(StateType.CRASHED, T0), alive)
    assert "ended Completed" in why(run_in(StateType.COMPLETED, T0), alive)
    assert why(run_in(StateType.SCHEDULED, T0 - 10 * STALL), dead) is None
    # After an outage of the API, silence counts from when it answered again.
    back = moment - timedelta(seconds=20)
    assert why(run_in(StateType.PENDING, T0), dead, up_since=back) is None
    assert why(run_in(StateType.RUNNING, T0 - STALL), alive, up_since=back) is None


def test_recoveries_count_faults_since_anyone_else_scheduled_the_run():
    def at(minute: int, kind: StateType, message: str | None = None) -> State:
        return State(type=kind, timestamp=T0 + timedelta(minutes=minute), message=message)

    ours = f"{MARK}: recovery 1 of 3: its worker died"
    scheduled, running, crashed = StateType.SCHEDULED, StateType.RUNNING, StateType.CRASHED
    first = [at(0, scheduled), at(1, running), at(2, crashed)]
    assert fault_in_a_row(first) == 1
    second = [*first, at(3, scheduled, ours), at(4, running), at(5, crashed)]
    assert fault_in_a_row(second) == 2
    # One kill reported twice: the late report lands on the reschedule; still the first.
    assert fault_in_a_row([*first, at(3, scheduled, ours), at(4, crashed)]) == 1
    # Crashed before a worker took it (marked by hand, say): a fault too.
    assert fault_in_a_row([at(0, scheduled), at(1, crashed)]) == 1
    # Claimed and never started is a fault too.
    assert fault_in_a_row([*first, at(3, scheduled, ours), at(4, StateType.PENDING)]) == 2
    # An analyst's retry-failed gives the run a fresh budget.
    assert fault_in_a_row([*second, at(6, scheduled, "retry-failed"), at(7, running)]) == 1


@pytest.mark.usefixtures("prefect_server")
def test_a_pass_resubmits_jobs_planned_by_a_submitter_that_died(app_db, tmp_path: Path):
    """The embedded default keeps the app database in SQLite, which stores no time zone:
    a pass there once failed comparing its moments ("offset-naive and offset-aware")."""
    setup()
    media = register_media(make_jpeg(tmp_path / "p.jpg", 640, 480), category="AUTRE")
    planned = datetime.now(UTC) - 2 * STALL  # then the submitter died, before any run

    def plan(session) -> None:  # type: ignore[no-untyped-def]
        start_jobs(session, media.id, ["generate-thumbnails"], None)
        session.execute(
            update(ProcessingJob)
            .where(ProcessingJob.media_id == media.id)
            .values(updated_at=planned)
        )

    transaction(plan)
    reconciler = Reconciler()
    reconciler.api_up_since = planned  # the API has answered all along

    recoveries = reconciler.run_pass()

    assert [(r.media_id, r.action) for r in recoveries] == [(str(media.id), "resubmitted")]
    with session_scope() as session:
        (row,) = session.scalars(select(ProcessingJob).where(ProcessingJob.media_id == media.id))
        assert row.flow_run_id == recoveries[0].flow_run_id
        assert row.updated_at.tzinfo is not None
    assert reconciler.run_pass() == []  # planned and run: nothing more to do


@pytest.mark.usefixtures("prefect_server")
def test_two_reconcilers_racing_on_one_crashed_run_act_once(postgres_app_db, tmp_path: Path):
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    from flows.submission import submit_media

    setup()
    media = register_media(make_jpeg(tmp_path / "p.jpg", 640, 480), category="AUTRE")
    (run_id,) = submit_media(media.id)
    with get_client(sync_client=True) as client:  # its process died, and it was reported
        client.set_flow_run_state(uuid.UUID(run_id), Crashed(message="exit -9"), force=True)
    reconcilers = [Reconciler(), Reconciler()]
    barrier = threading.Barrier(2)

    def run_pass(reconciler: Reconciler) -> list:  # type: ignore[type-arg]
        barrier.wait(10)
        return reconciler.run_pass()

    for trial in range(3):  # the run is found Crashed again after each reschedule
        with ThreadPoolExecutor(2) as pool:  # each in a copy of this context (the API URL)
            calls = [
                pool.submit(contextvars.copy_context().run, run_pass, reconciler)
                for reconciler in reconcilers
            ]
            done = [r for call in calls for r in call.result()]
        assert [(r.flow_run_id, r.action) for r in done] == [(run_id, "rescheduled")], trial
        assert done[0].reason.startswith(f"recovery {trial + 1} of 3"), done[0].reason
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(uuid.UUID(run_id))
            assert run.state.type is StateType.SCHEDULED
            client.set_flow_run_state(run.id, State(type=StateType.RUNNING), force=True)
            client.set_flow_run_state(run.id, Crashed(message="exit -9"), force=True)


@pytest.mark.usefixtures("prefect_server", "sqlite_db")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "../x"], "media id '../x' is not a UUID"),
        (["submit", "6f1c7e9a-1111-4222-8333-944455556666"], "does not exist"),
        (["status", "abc"], "flow run id 'abc' is not a UUID"),
        (["status", "6f1c7e9a-1111-4222-8333-944455556666"], "flow run 6f1c7e9a-1111-4222"),
        (["retry-failed", "nope"], "flow run id 'nope' is not a UUID"),
        (["failed", "--job", "make-coffee"], "unknown job 'make-coffee'"),
    ],
)
def test_bad_ids_get_one_error_line_and_exit_2(args: list[str], message: str):
    result = cli.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


@pytest.mark.usefixtures("prefect_server", "sqlite_db")
def test_a_submission_to_a_server_without_the_deployments_says_to_run_setup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """Before ``setup`` the runs cannot be made: one line says so, and the planned runs wait
    in the outbox with that reason (a relay makes them once the deployments exist)."""
    monkeypatch.setenv("MEDIA_PIPELINE_WORK_POOL", f"unset-{uuid.uuid4().hex[:6]}")
    get_settings.cache_clear()
    media = register_media(make_jpeg(tmp_path / "p.jpg", 320, 240))
    result = cli.invoke(app, ["submit", str(media.id)])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    pool = get_settings().orchestration.work_pool
    assert line.startswith(f"error: the Prefect server has no deployment process-media/{pool}-")
    assert "run `media-pipeline setup`" in line
    with session_scope() as session:
        (waiting,) = session.scalars(select(OutboxRun).where(OutboxRun.media_id == media.id))
        assert "has no deployment" in (waiting.last_error or "")
        assert load_media(session, media.id).jobs[0].state is JobState.PENDING
