"""Fault, fuzz and security suite (`make chaos`; a reduced version runs in `make test`)."""
