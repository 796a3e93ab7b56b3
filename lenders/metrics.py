"""Prometheus metrics through the official client (prometheus_client).

Two kinds of figures:

* **Counted as they happen** (a callback's outcome, a payment's posting latency): counters
  and histograms that packages define at import with prometheus_client. Under gunicorn's
  several workers and beside separate ``flask jobs worker`` processes, each process counts in
  its own memory-mapped file in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's
  multiprocess mode), and a scrape, whichever process answers it, adds up every file. The
  variable must be set, to the same empty directory, in the environment of every process of
  the deployment before it starts (prometheus_client chooses its storage when it is
  imported), and the directory emptied before the deployment starts, never while it runs.
  Without it (the embedded default: one process) the counts live in the process.
* **Read at scrape time** from the database and Redis (queue depths, unmatched payments,
  the oldest payment waiting, the periodic jobs), from the same snapshot as /healthz: they
  are the state of the rows, so they are right whichever process is scraped.
"""

from __future__ import annotations

import os
from collections import defaultdict

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

from lenders.monitoring import Sample, Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ConfigError(RuntimeError):
    """PROMETHEUS_MULTIPROC_DIR names something that cannot be the metrics directory."""


def multiprocess_dir() -> str | None:
    """The directory every process counts in, or None (counts in this process only)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def check_multiprocess_dir() -> None:
    """At start-up: the directory exists (made if need be) and is writable, so that no
    count on a callback's path can fail for want of it."""
    path = multiprocess_dir()
    if path is None:
        return
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"PROMETHEUS_MULTIPROC_DIR {path!r}: {exc}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"PROMETHEUS_MULTIPROC_DIR {path!r} is not writable")


class _ThisProcess:
    """The default registry's metrics (this process's counts, its CPU and memory)."""

    def collect(self):
        return REGISTRY.collect()


def _gauge(name: str, doc: str, samples: list[Sample]) -> GaugeMetricFamily:
    labels = [key for key, _ in samples[0].labels]
    family = GaugeMetricFamily(name, doc, labels=labels)
    for sample in samples:
        family.add_metric([value for _, value in sample.labels], sample.value)
    return family


class SnapshotCollector:
    """The gauges read from one snapshot (lenders/monitoring.py)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def samples(self) -> list[Sample]:
        snap = self.snapshot
        found = [
            Sample("marejesho_database_up", "1 when the database answered", float(snap.database.ok))
        ]
        if snap.redis is not None:
            found.append(
                Sample("marejesho_redis_up", "1 when Redis answered", float(snap.redis.ok))
            )
        depth = "Jobs waiting: rows waiting for each drain, one-off jobs on RQ's queue"
        for drain, rows in sorted(snap.depths.items()):
            found.append(Sample("marejesho_queue_depth", depth, rows, (("queue", drain),)))
        if snap.rq is not None:
            found.append(Sample("marejesho_queue_depth", depth, snap.rq.queued, (("queue", "rq"),)))
            found.append(
                Sample("marejesho_rq_failed_jobs", "RQ jobs in the failed registry", snap.rq.failed)
            )
            found.append(Sample("marejesho_rq_workers", "RQ workers registered", snap.rq.workers))
        for job in snap.periodic:
            labels = (("job", job["name"]),)
            if job["finished_at"]:
                found.append(
                    Sample(
                        "marejesho_periodic_job_finished_timestamp_seconds",
                        "When the periodic job last finished",
                        job["finished_at"].timestamp(),
                        labels,
                    )
                )
            found.append(
                Sample(
                    "marejesho_periodic_job_failed",
                    "1 when the periodic job's last run failed",
                    float(bool(job["error"])),
                    labels,
                )
            )
        return found + snap.gauges

    def collect(self):
        by_name: dict[str, list[Sample]] = defaultdict(list)
        for sample in self.samples():
            by_name[sample.name].append(sample)
        for name, samples in by_name.items():
            yield _gauge(name, samples[0].doc, samples)


def exposition(snapshot: Snapshot) -> bytes:
    """The text Prometheus scrapes: every process's counts, then the snapshot's gauges."""
    registry = CollectorRegistry()
    path = multiprocess_dir()
    if path:
        multiprocess.MultiProcessCollector(registry, path=path)
    else:
        registry.register(_ThisProcess())
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)
