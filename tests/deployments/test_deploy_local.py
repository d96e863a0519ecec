"""prefect.yaml deployed for real: local Prefect server, process work pool, worker, automations.

One Prefect server (a subprocess, PREFECT_HOME in tmp, telemetry off) serves the module:
`prefect --no-prompt deploy --all` from the repository root, then the automations of
signalengine/automations.yaml, then a real worker that runs the scheduled flows against
the test database. Every child runs in its own process group and is killed at the end.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import httpx
import pytest
import yaml
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.events import Event
from prefect.events.clients import PrefectEventsClient
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled, Running, Scheduled

from signalengine.automations import AUTOMATIONS_FILE, apply_automations, load_automations
from signalengine.core.telemetry import TELEMETRY_OFF
from tests.utils.net import free_port
from tests.utils.processes import stop, wait_http

ROOT = Path(__file__).resolve().parents[2]
POOL = "signalengine-process"
ZOMBIE = "signalengine-crash-zombie-flow-runs"
RERUN = "signalengine-rerun-crashed-stream"
T = TypeVar("T")


@dataclass
class Server:
    api_url: str
    env: dict[str, str]
    logs: Path


def _prefect(args: list[str], server: Server, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=ROOT,
        env={**server.env, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"prefect {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _call(server: Server, fn: Callable[[PrefectClient], Awaitable[T]]) -> T:
    """Run `fn(client)` against the test server (tests here are synchronous)."""

    async def main() -> T:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            async with get_client() as client:
                return await fn(client)

    return asyncio.run(main())


def _wait(what: str, check: Callable[[], T | None], timeout: float, step: float = 1.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.pop("SIGNALENGINE_HOME", None)  # deploy leaves the placeholder to the worker
    env.update(TELEMETRY_OFF)
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        }
    )
    proc = _start(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env,
        home / "server.log",
    )
    try:
        wait_http(f"{api_url}/health", timeout=90, proc=proc)
        yield Server(api_url, env, home)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def deployed(server: Server) -> dict[str, DeploymentResponse]:
    _prefect(
        [
            "work-pool",
            "create",
            POOL,
            "--type",
            "process",
            "--base-job-template",
            str(ROOT / "deployments" / "work-pool.json"),
            "--overwrite",
        ],
        server,
    )
    _prefect(["--no-prompt", "deploy", "--all"], server)

    async def read(client: PrefectClient) -> list[DeploymentResponse]:
        return await client.read_deployments()

    return {d.name: d for d in _call(server, read)}


async def _read_runs(client: PrefectClient, deployment: DeploymentResponse) -> list[FlowRun]:
    only = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
    return await client.read_flow_runs(deployment_filter=only)


def _runs(server: Server, deployment: DeploymentResponse) -> list[FlowRun]:
    return _call(server, lambda client: _read_runs(client, deployment))


def _state(server: Server, run_id: UUID) -> StateType | None:
    async def read(client: PrefectClient) -> FlowRun:
        return await client.read_flow_run(run_id)

    state = _call(server, read).state
    return state.type if state else None


@pytest.mark.slow
def test_every_deployment_exists_with_its_schedule(
    deployed: dict[str, DeploymentResponse],
) -> None:
    spec = {
        d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    }
    assert sorted(deployed) == sorted(spec)
    for name, want in spec.items():
        got = deployed[name]
        assert got.entrypoint == want["entrypoint"]
        assert got.work_pool_name == POOL
        assert got.tags == want["tags"]
        expected = want.get("schedules") or []
        assert len(got.schedules) == len(expected), name
        for schedule, wanted in zip(got.schedules, expected, strict=True):
            assert schedule.active
            built = schedule.schedule
            if "interval" in wanted:
                assert isinstance(built, IntervalSchedule), name
                assert built.interval == timedelta(seconds=wanted["interval"])
            else:
                assert isinstance(built, CronSchedule), name
                assert built.cron == wanted["cron"]
            assert built.timezone == "UTC"
        if "parameters" in want:
            assert got.parameters == want["parameters"]
        if "concurrency_limit" in want:
            limit, options = got.global_concurrency_limit, got.concurrency_options
            assert limit is not None and limit.limit == want["concurrency_limit"]["limit"]
            assert options is not None
            assert options.collision_strategy == want["concurrency_limit"]["collision_strategy"]


@pytest.mark.slow
def test_the_scheduler_creates_runs_for_settle_and_rollups(
    server: Server, deployed: dict[str, DeploymentResponse]
) -> None:
    def scheduled(name: str) -> list[FlowRun]:
        return [r for r in _runs(server, deployed[name]) if r.auto_scheduled]

    for name in ("settle", "rollups"):
        runs = _wait(f"scheduled {name} runs", partial(scheduled, name), timeout=30)
        assert all(r.state and r.state.type == StateType.SCHEDULED for r in runs)
    assert not any(r.auto_scheduled for r in _runs(server, deployed["stream"]))


def test_the_automation_file_passes_the_server_side_checks() -> None:
    """Including Prefect's guard against RunDeployment loops on flow-run events."""
    from prefect.server.events.schemas.automations import AutomationCore as ServerAutomation

    automations = load_automations(AUTOMATIONS_FILE)
    assert [a.name for a in automations] == [ZOMBIE, RERUN]
    for automation in automations:
        ServerAutomation.model_validate(automation.model_dump(mode="json"))


@pytest.mark.slow
def test_automations_are_applied_idempotently(server: Server, tmp_path: Path) -> None:
    first = apply_automations(server.api_url)
    assert {a.name: a.action for a in first} == {ZOMBIE: "created", RERUN: "created"}
    second = apply_automations(server.api_url)
    assert {a.name: a.action for a in second} == {ZOMBIE: "unchanged", RERUN: "unchanged"}
    assert [a.id for a in first] == [a.id for a in second]

    # a changed definition updates in place
    changed = tmp_path / "automations.yaml"
    changed.write_text(AUTOMATIONS_FILE.read_text().replace("within: 90", "within: 120"))
    updated = apply_automations(server.api_url, path=changed)
    assert {a.name: a.action for a in updated} == {ZOMBIE: "updated", RERUN: "unchanged"}
    assert [a.id for a in updated] == [a.id for a in first]
    # a copy made by `prefect automation create` goes; the copy that matches the file stays
    _prefect(["automation", "create", "--from-file", str(AUTOMATIONS_FILE)], server)
    restored = apply_automations(server.api_url)
    assert {a.name: a.action for a in restored} == {ZOMBIE: "unchanged", RERUN: "unchanged"}
    again = apply_automations(server.api_url)
    assert [(a.id, a.action) for a in again] == [(a.id, "unchanged") for a in restored]

    async def read(client: PrefectClient) -> list[Any]:
        return await client.read_automations()

    on_server = _call(server, read)
    assert sorted(a.name for a in on_server) == sorted([ZOMBIE, RERUN])
    assert all(a.enabled for a in on_server)
    zombie = next(a for a in on_server if a.name == ZOMBIE)
    assert zombie.trigger.within == timedelta(seconds=90)


@pytest.mark.slow
def test_a_zombie_stream_run_is_crashed_and_rerun_for_its_shard(
    server: Server, deployed: dict[str, DeploymentResponse]
) -> None:
    """The zombie trigger of automations.yaml (with a 10 s window), then the stream rerun."""
    stream = deployed["stream"]
    zombie = next(a for a in load_automations(AUTOMATIONS_FILE) if a.name == ZOMBIE)
    quick = zombie.model_copy(
        update={
            "name": f"{ZOMBIE}-quick",
            "trigger": zombie.trigger.model_copy(update={"within": timedelta(seconds=10)}),
        }
    )
    params = {"symbols": ["ETH/USDT"], "shard": "1/3"}

    async def setup(client: PrefectClient) -> tuple[FlowRun, UUID]:
        quick_id = await client.create_automation(quick)
        later: State[Any] = Scheduled(scheduled_time=datetime.now(UTC) + timedelta(hours=1))
        run = await client.create_flow_run_from_deployment(
            stream.id, parameters=params, state=later
        )
        await client.set_flow_run_state(run.id, Running(), force=True)
        return await client.read_flow_run(run.id), quick_id

    run, quick_id = _call(server, setup)
    assert "signalengine" in run.tags

    async def beat() -> None:  # what the flow-run process sends, then it "dies"
        tags = [
            {"prefect.resource.id": f"prefect.tag.{t}", "prefect.resource.role": "tag"}
            for t in run.tags
        ]
        heartbeat = Event.model_validate(
            {
                "event": "prefect.flow-run.heartbeat",
                "resource": {
                    "prefect.resource.id": f"prefect.flow-run.{run.id}",
                    "prefect.resource.name": run.name,
                },
                "related": [
                    {
                        "prefect.resource.id": f"prefect.deployment.{stream.id}",
                        "prefect.resource.role": "deployment",
                    },
                    *tags,
                ],
            }
        )
        async with PrefectEventsClient(api_url=server.api_url) as events:
            await events.emit(heartbeat)

    asyncio.run(beat())
    _wait(
        "the zombie run to be marked Crashed",
        lambda: _state(server, run.id) == StateType.CRASHED,
        timeout=60,
    )
    crashed_at = datetime.now(UTC)

    def rerun() -> FlowRun | None:
        return next((r for r in _runs(server, stream) if r.id != run.id), None)

    again = _wait("the rerun of the crashed stream", rerun, timeout=30)
    try:
        assert again.parameters["shard"] == "1/3"
        assert again.parameters["symbols"] == ["ETH/USDT"]
        assert again.state is not None and again.state.type == StateType.SCHEDULED
        # restarted after `schedule_after` (10 s), not in a tight loop
        assert again.expected_start_time is not None
        assert again.expected_start_time > crashed_at
    finally:

        async def cleanup(client: PrefectClient) -> None:
            await client.set_flow_run_state(again.id, Cancelled(), force=True)
            await client.delete_automation(quick_id)

        _call(server, cleanup)


@pytest.mark.slow
def test_a_worker_runs_the_scheduled_flows(
    server: Server, deployed: dict[str, DeploymentResponse], database_url: str
) -> None:
    # nothing but settle and rollups may start: no stream run is left waiting
    async def cancel_streams(client: PrefectClient) -> None:
        for flow_run in await _read_runs(client, deployed["stream"]):
            if flow_run.state and not flow_run.state.is_final():
                await client.set_flow_run_state(flow_run.id, Cancelled(), force=True)

    _call(server, cancel_streams)
    env = {
        **server.env,
        "SIGNALENGINE_DATABASE_URL": database_url,
        "SIGNALENGINE_HOME": str(ROOT),
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
    }
    log = server.logs / "worker.log"
    worker = _start(
        [
            sys.executable,
            "-m",
            "prefect",
            "worker",
            "start",
            "--pool",
            POOL,
            "--name",
            "test-worker",
        ],
        env,
        log,
    )
    try:
        out = _prefect(["deployment", "run", "settle/settle"], server).stdout
        assert "settle" in out

        def completed(name: str, *, auto: bool | None = None) -> list[FlowRun]:
            assert worker.poll() is None, log.read_text()[-3000:]
            return [
                r
                for r in _runs(server, deployed[name])
                if r.state
                and r.state.type == StateType.COMPLETED
                and (auto is None or r.auto_scheduled == auto)
            ]

        manual = _wait(
            "the manual settle run to complete",
            lambda: completed("settle", auto=False),
            timeout=90,
            step=2,
        )
        _wait(
            "a scheduled settle run to complete",
            lambda: completed("settle", auto=True),
            timeout=90,
            step=2,
        )
        failed = [
            r.name
            for r in _runs(server, deployed["settle"])
            if r.state and r.state.type in (StateType.FAILED, StateType.CRASHED)
        ]
        assert not failed, log.read_text()[-3000:]

        # heartbeats are on, so the zombie automation watches these runs
        response = httpx.post(
            f"{server.api_url}/events/filter",
            json={
                "filter": {
                    "event": {"name": ["prefect.flow-run.heartbeat"]},
                    "resource": {"id": [f"prefect.flow-run.{manual[0].id}"]},
                },
                "limit": 5,
            },
            timeout=10,
        )
        response.raise_for_status()
        assert response.json()["events"], "no heartbeat event from the settle run"
    finally:
        stop(worker)
