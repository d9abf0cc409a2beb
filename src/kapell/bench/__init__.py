"""Benchmarks and trace readers: JSON out, baseline measured in the same run."""
