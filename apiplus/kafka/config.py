"""Kafka client options from settings, including SASL/SCRAM and TLS, shared by every client we build."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from apiplus.settings import WorkerSettings


@dataclass(frozen=True)
class KafkaClientConfig:
    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    client_id: str = "apiplus"

    @classmethod
    def from_settings(cls, settings: WorkerSettings, client_id: str) -> KafkaClientConfig:
        return cls(
            bootstrap=settings.kafka_bootstrap,
            security_protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=(
                settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
            ),
            ssl_cafile=settings.kafka_ssl_cafile,
            client_id=client_id,
        )

    def __repr__(self) -> str:  # never print the SASL password
        return f"KafkaClientConfig(bootstrap={self.bootstrap!r}, security_protocol={self.security_protocol!r})"

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            opts["sasl_mechanism"] = self.sasl_mechanism or "SCRAM-SHA-512"
            opts["sasl_plain_username"] = self.sasl_username
            opts["sasl_plain_password"] = self.sasl_password
        if self.security_protocol.endswith("SSL"):
            opts["ssl_context"] = ssl.create_default_context(cafile=self.ssl_cafile)
        return opts
