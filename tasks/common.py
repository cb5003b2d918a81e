"""Task options shared by the pipeline's tasks.

I/O tasks retry with backoff; no task caches its (large) inputs or results by hashing
them, and results are not persisted: the data lives in InfluxDB and MLflow.
"""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE

IO_RETRIES = 3
IO_BACKOFF = [2, 5, 15]

#: options for tasks that talk to InfluxDB or MLflow
IO_TASK = dict(
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
    retry_jitter_factor=0.5,
    cache_policy=NO_CACHE,
    persist_result=False,
)

#: options for CPU-bound tasks (fitting, scoring) that should not be retried blindly
CPU_TASK = dict(cache_policy=NO_CACHE, persist_result=False)
