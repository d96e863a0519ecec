"""Helpers shared by the Prometheus and Grafana tests: metric names in PromQL, and the
sample names our two registries really expose."""

from __future__ import annotations

import re
from functools import cache

from prometheus_client.registry import CollectorRegistry

# Series Prometheus itself writes for every target.
PROMETHEUS_SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN"})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_TEMPLATE_VARS = re.compile(r"\$\{?\w+\}?")
_IDENTIFIER = re.compile(r"(?<![\w.:$])[A-Za-z_:][A-Za-z0-9_:]*")
_SELECTOR = re.compile(r"(?<![\w.:$])([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_JOB = re.compile(r'\bjob\s*=\s*"([^"]*)"')


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (not functions, keywords, labels or durations)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub("", text)
    text = _TEMPLATE_VARS.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        token = match.group(0)
        if token in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue  # an operator, or a function / aggregation call
        names.add(token)
    return names


def selectors_by_job(expr: str) -> set[tuple[str, str]]:
    """(metric, job) for every selector that names a single job with job="..."."""
    pairs = set()
    for match in _SELECTOR.finditer(expr):
        job = _JOB.search(match.group(2))
        if job:
            pairs.add((match.group(1), job.group(1)))
    return pairs


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Sample names a scrape of `registry` can return, derived from each family's type.

    Counters are exposed as `<family>_total`, histograms as `_bucket`, `_sum`, `_count`,
    summaries as `_sum`, `_count`; gauges under their own name. `_created` is left out on
    purpose: nothing should be graphed from it.
    """
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        elif family.type == "summary":
            names.update({family.name, f"{family.name}_sum", f"{family.name}_count"})
        elif family.type == "info":
            names.add(f"{family.name}_info")
        else:
            names.add(family.name)
    return names


@cache
def stream_names() -> frozenset[str]:
    """What the stream process serves on its metrics port (tasks.metrics.REGISTRY)."""
    from signalengine.tasks.metrics import REGISTRY

    return frozenset(exposed_names(REGISTRY))


@cache
def api_names() -> frozenset[str]:
    """What an API replica serves at /metrics (api.metrics.ApiMetrics().registry).

    The database-backed histograms are only yielded once there is data, so the snapshot
    gets one settled signal first.
    """
    from signalengine.api.metrics import ApiMetrics, DatabaseSnapshot

    metrics = ApiMetrics()
    metrics._database.snapshot = DatabaseSnapshot(  # no public setter
        returns=([1] * 11, 0.5, 1), durations=([1] * 9, 60.0, 1)
    )
    return frozenset(exposed_names(metrics.registry))


def names_by_job() -> dict[str, frozenset[str]]:
    """Scrape job (deployments/prometheus/prometheus.yml) -> sample names it serves."""
    return {"api": api_names(), "stream": stream_names()}


def known_names() -> frozenset[str]:
    """Every sample name the stack exposes, plus Prometheus's own per-target series."""
    return api_names() | stream_names() | PROMETHEUS_SYNTHETIC
