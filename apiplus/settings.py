"""Settings shared by every worker; each service adds its own with its own env prefix."""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(SystemExit):
    """Raised at start when a setting is missing or malformed; the message names the variable."""


class WorkerSettings(BaseSettings):
    """Connection settings every worker needs, read from APIPLUS_* whatever the service prefix."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    kafka_bootstrap: str = Field(validation_alias=AliasChoices("APIPLUS_KAFKA_BOOTSTRAP"))
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", validation_alias=AliasChoices("APIPLUS_KAFKA_SECURITY_PROTOCOL")
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, validation_alias=AliasChoices("APIPLUS_KAFKA_SASL_MECHANISM")
    )
    kafka_sasl_username: str | None = Field(None, validation_alias=AliasChoices("APIPLUS_KAFKA_SASL_USERNAME"))
    kafka_sasl_password: SecretStr | None = Field(
        None, validation_alias=AliasChoices("APIPLUS_KAFKA_SASL_PASSWORD")
    )
    kafka_ssl_cafile: str | None = Field(None, validation_alias=AliasChoices("APIPLUS_KAFKA_SSL_CAFILE"))
    redis_url: SecretStr = Field(validation_alias=AliasChoices("APIPLUS_REDIS_URL"))
    log_level: str = Field("INFO", validation_alias=AliasChoices("APIPLUS_LOG_LEVEL"))
    kafka_log_level: str = Field("WARNING", validation_alias=AliasChoices("APIPLUS_KAFKA_LOG_LEVEL"))


S = TypeVar("S", bound=BaseSettings)


def _env_name(cls: type[BaseSettings], loc: tuple[int | str, ...]) -> str:
    name = str(loc[0]) if loc else "?"
    field = cls.model_fields.get(name)
    if field is not None and isinstance(field.validation_alias, AliasChoices):
        return str(field.validation_alias.choices[0])
    if name.startswith("APIPLUS_"):
        return name
    prefix = cls.model_config.get("env_prefix", "") or ""
    return f"{prefix}{name}".upper()


def load_settings(cls: type[S]) -> S:
    """Build settings once at start; fail with a message naming each bad variable."""
    try:
        return cls()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            var = _env_name(cls, tuple(err["loc"]))
            if err["type"] == "missing":
                problems.append(f"missing required setting {var}")
            else:
                problems.append(f"invalid setting {var}: {err['msg']}")
        raise SettingsError("apiplus: " + "; ".join(problems)) from None
