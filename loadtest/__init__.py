"""Benchmarks and load generators."""
