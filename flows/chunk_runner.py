"""Where chunked work runs: this process, a Dask LocalCluster, or an existing Dask cluster.

(Not named `distributed.py`: Prefect puts a flow file's folder on sys.path when it loads
a deployment entrypoint, and that name would then shadow Dask's `distributed` package.)

Prefect's `DaskTaskRunner` (prefect-dask) sends each chunk task to a Dask worker; the
flow submits the same tasks either way, so the Prefect UI shows one task run per chunk.
`SIGNALENGINE_DASK_ADDRESS` names a running scheduler (workers on other machines, see
deployments/README.md); otherwise `dask_workers` > 0 starts a LocalCluster of that many
single-threaded worker processes on 127.0.0.1 (one per core is the sensible maximum).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from signalengine.core.config import Settings

if TYPE_CHECKING:  # prefect-dask imports dask.distributed (~1 s): only when Dask runs
    from prefect_dask.task_runners import DaskTaskRunner

__all__ = ["dask_runner", "uses_dask"]


def uses_dask(settings: Settings, workers: int | None = None) -> bool:
    """Whether chunks go to Dask: a scheduler address is set, or local workers are asked for."""
    return (
        bool(settings.dask_address)
        or (workers if workers is not None else settings.dask_workers) > 0
    )


def dask_runner(settings: Settings, workers: int | None = None) -> DaskTaskRunner:
    """A DaskTaskRunner on `dask_address`, else on a LocalCluster of `workers` processes."""
    from prefect_dask.task_runners import DaskTaskRunner

    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    count = workers if workers is not None and workers > 0 else settings.dask_workers
    count = count or os.cpu_count() or 1
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": count,
            "threads_per_worker": 1,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": ":0",  # any free port: None still binds 8787
        }
    )
