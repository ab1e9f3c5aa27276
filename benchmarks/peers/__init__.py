"""Peer engines run side by side with Kadence on the same workload (see README, Benchmarks)."""
