"""Benchmarks for handinger-stream. Run ``python -m benchmarks --help``."""
