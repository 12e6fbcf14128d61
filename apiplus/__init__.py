"""Shared library of the apiplus workers: envelope, errors, settings, Kafka/Redis adapters, logs, metrics."""
