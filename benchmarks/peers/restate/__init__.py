"""The Restate peer: installer, the benchmark services and a driver (see README, Benchmarks)."""
