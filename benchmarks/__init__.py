"""Kadence benchmarks: ``python -m benchmarks.bench``."""
