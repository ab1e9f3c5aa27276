"""The workflow runtime: definitions, the deterministic loop, instances and history replay."""
