"""Benchmarks and the multi-replica launcher they share with tests/scaleout (not part of the installed package)."""
