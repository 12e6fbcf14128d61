"""billing's settings (APIPLUS_BILLING_*), built once at start. Durations in seconds (notice in calendar
days, as the invoice counts them); topics from apiplus.topics."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from apiplus import topics
from apiplus.settings import WorkerSettings
from services.billing.pricing import DEFAULT_CATALOG


class BillingSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="APIPLUS_BILLING_", frozen=True, extra="ignore")

    http_host: str = "127.0.0.1"
    http_port: int = Field(9103, ge=0, le=65535)  # 0: any free port
    group_id: str = "apiplus-billing"
    catalog_path: Path = DEFAULT_CATALOG
    notice_days: int = Field(10, ge=0, le=31)
    due_day_timer: bool = True
    due_day_grace_seconds: float = Field(24 * 3600, ge=0)
    tick_seconds: float = Field(60.0, gt=0)
    input_topic: str = topics.BILLING_LIFECYCLE.name
    output_topic: str = topics.BILLING_INVOICES.name
    state_topic: str = topics.BILLING_STATE.name
