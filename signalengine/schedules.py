"""The scheduled flows served from one process (what `signalengine up` runs).

Prefect's own scheduler creates the runs; `prefect.serve` executes them here. In the
production shape the same schedules come from `prefect.yaml` and run on workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from prefect import serve

from signalengine.flows.retrain import retrain
from signalengine.flows.rollups import rollups
from signalengine.flows.settle import settle

SETTLE_EVERY_SECONDS = 60
ROLLUPS_EVERY_SECONDS = 300
RETRAIN_CRON = "17 3 * * *"

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment


def serve_schedules() -> None:
    """Serve settle (every minute), rollups (every 5 minutes) and retrain (daily); blocks."""
    # `to_deployment` is sync_compatible: called from sync code it returns the
    # RunnerDeployment itself, not the coroutine its annotation also allows.
    serve(
        cast(
            "RunnerDeployment",
            settle.to_deployment(
                name="settle", interval=SETTLE_EVERY_SECONDS, tags=["signalengine"]
            ),
        ),
        cast(
            "RunnerDeployment",
            rollups.to_deployment(
                name="rollups", interval=ROLLUPS_EVERY_SECONDS, tags=["signalengine"]
            ),
        ),
        cast(
            "RunnerDeployment",
            retrain.to_deployment(name="retrain", cron=RETRAIN_CRON, tags=["signalengine"]),
        ),
        print_starting_message=False,
    )
