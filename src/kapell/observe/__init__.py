"""Metric names, drift detection, reports and plots."""
