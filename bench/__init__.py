"""Benchmarks (`make bench`): each worker against a baseline measured in the same run."""
