"""ingest's settings (APIPLUS_INGEST_*), built once at start."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from apiplus.settings import WorkerSettings


class IngestSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="APIPLUS_INGEST_", frozen=True, extra="ignore")

    http_host: str = "127.0.0.1"
    http_port: int = Field(9101, ge=0, le=65535)  # 0: any free port
    group_id: str = "apiplus-ingest"
    health_group_id: str = "apiplus-ingest-health"
    raw_topic: str = "apiplus.ingest.raw.v1"
    # Evolution API's own Kafka integration: per-instance topics and its global topic.
    evolution_pattern: str = r"evolution\..*"
    subscribe_evolution: bool = True
    events_topic: str = "apiplus.ingest.events.v1"
    health_topic: str = "apiplus.ingest.health.v1"
    state_topic: str = "apiplus.ingest.channel-state.v1"
    max_payload_bytes: int = Field(512 * 1024, ge=1024)
    dedupe_window_seconds: int = Field(24 * 3600, ge=60)
    flapping_disconnects: int = Field(5, ge=2)
    flapping_window_minutes: float = Field(10, gt=0)
    qr_loop_codes: int = Field(5, ge=2)
    stale_after_minutes: float = Field(30, gt=0)
    tick_seconds: float = Field(15, gt=0)


class WebhookSettings(WorkerSettings):
    """`apiplus ingest webhook`: the HTTP ingress for the gateways' webhooks. It needs Kafka, not Redis.

    A secret left unset closes its route (every request refused), so a deployment that serves only one
    gateway does not have to invent secrets for the others.
    """

    model_config = SettingsConfigDict(env_prefix="APIPLUS_INGEST_", frozen=True, extra="ignore")

    # The ingress never talks to Redis; the shared settings make it required for the workers only.
    redis_url: SecretStr | None = Field(None, validation_alias=AliasChoices("APIPLUS_REDIS_URL"))  # type: ignore[assignment]
    webhook_host: str = "127.0.0.1"
    webhook_port: int = Field(9180, ge=0, le=65535)  # 0: any free port
    raw_topic: str = "apiplus.ingest.raw.v1"
    # At least 16 characters each: an empty app secret would let anyone sign a body.
    cloudapi_verify_token: SecretStr | None = Field(None, min_length=16)
    cloudapi_app_secret: SecretStr | None = Field(None, min_length=16)
    webhook_key: SecretStr | None = Field(None, min_length=16)
    # At most the ingest worker's payload limit (APIPLUS_INGEST_MAX_PAYLOAD_BYTES) and the broker's
    # default message.max.bytes (1 MB), so nothing accepted here is refused further on.
    webhook_max_body_bytes: int = Field(512 * 1024, ge=1024, le=1_000_000)
    webhook_ack_timeout_seconds: float = Field(5.0, gt=0)
    webhook_retry_after_seconds: int = Field(5, ge=1)
    webhook_max_pending: int = Field(10_000, ge=1)
    webhook_linger_ms: int = Field(2, ge=0)
    webhook_producers: int = Field(4, ge=1, le=16)
