"""dispatch's settings (APIPLUS_DISPATCH_*), built once at start.

Each provider's endpoint, credential and provider-specific pacing are in its own module under
providers/ (`APIPLUS_DISPATCH_<PROVIDER>_*`); topic defaults come from the topic table.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from apiplus import topics
from apiplus.settings import WorkerSettings
from services.dispatch.providers import PacingDefaults


class DispatchSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="APIPLUS_DISPATCH_", frozen=True, extra="ignore")

    http_host: str = "127.0.0.1"
    http_port: int = Field(9102, ge=0, le=65535)  # 0: any free port
    group_id: str = "apiplus-dispatch"
    commands_topic: str = topics.DISPATCH_COMMANDS.name
    retry_topic: str = topics.DISPATCH_RETRY.name
    results_topic: str = topics.DISPATCH_RESULTS.name
    registry_topic: str = topics.REGISTRY_CHANNELS.name
    health_topic: str = topics.INGEST_HEALTH.name
    progress_topic: str = topics.DISPATCH_PROGRESS.name
    # Providers (or proxies in front of them) that honour Idempotency-Key: a send whose outcome is
    # unknown after a crash or timeout is retried only there; elsewhere it ends as failed/delivery_unknown.
    idempotent_providers: str = "simulator"
    http_timeout_seconds: float = Field(10.0, gt=0)
    max_in_flight: int = Field(64, ge=1)
    max_buffered: int = Field(50_000, ge=100)  # commands in lanes, held ones included: intake pauses above
    # ... and above this many that are not held (a burst is read about as fast as it is sent, not all at
    # once: each queued command costs memory; docs/bench-notes/s3-dispatch-rss.md)
    max_buffered_sendable: int = Field(5_000, ge=100)
    # ... and while this many outputs wait for their partition's transaction (the commits fall behind the
    # sends: what waits for them, results and the finished jobs, would grow with the backlog)
    max_unflushed: int = Field(20_000, ge=100)
    # What one fetch brings per partition (aiokafka's default 1 MiB): fetched records stay in memory while
    # intake is paused; half of it kept ~30 MB off the full-scale peak (docs/benchmarks.md, fourth round)
    max_partition_fetch_bytes: int = Field(512 * 1024, ge=64 * 1024)
    # Pacing (anti-ban). Per-channel overrides come from the registry's `pacing` block.
    pacing_enabled: bool = True
    min_gap_ms: int = Field(4000, ge=0)
    jitter_ms: int = Field(3000, ge=0)
    hourly_cap: int = Field(300, ge=1)
    # Held messages for channels that are not open.
    send_when_health_unknown: bool = True
    max_queue_per_channel: int = Field(1000, ge=1)
    max_hold_seconds: float = Field(24 * 3600, gt=0)
    # Retries.
    attempts_in_place: int = Field(4, ge=1)
    backoff_base_seconds: float = Field(0.5, gt=0)
    backoff_cap_seconds: float = Field(30.0, gt=0)
    retry_rounds: int = Field(3, ge=0)
    retry_delay_seconds: float = Field(60.0, ge=0)
    dedupe_ttl_seconds: int = Field(7 * 24 * 3600, ge=60)
    # How often each partition's finished work (results, dead letters, parked commands) commits, with
    # its offset, in one transaction: the most a result waits to become visible.
    commit_interval_seconds: float = Field(0.5, gt=0)
    # Worker processes `apiplus dispatch run` starts, all in the same consumer group (each owns whole
    # partitions); process i serves its health and metrics on http_port + i (cli.py).
    processes: int = Field(1, ge=1, le=64)
    # The closed loop (docs/loop.md): receipts, replies, typed answers, unknown sends settled by echo.
    loop_enabled: bool = True
    events_topic: str = topics.INGEST_EVENTS.name
    receipts_group_id: str = "apiplus-dispatch-receipts"
    sent_map_ttl_seconds: int = Field(7 * 24 * 3600, ge=60)  # provider message id -> command
    offer_window_seconds: int = Field(24 * 3600, ge=60)  # typed answers to numbered options
    echo_window_seconds: float = Field(300.0, ge=0)  # an unknown send waits this long for its echo
    echo_poll_seconds: float = Field(1.0, gt=0)

    @property
    def idempotent(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.idempotent_providers.split(",") if p.strip())

    @property
    def pacing_defaults(self) -> PacingDefaults:
        return PacingDefaults(self.min_gap_ms, self.jitter_ms, self.hourly_cap)
