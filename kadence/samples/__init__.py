"""Runnable samples: ``python -m kadence.samples.hello`` against ``kadence dev``."""
