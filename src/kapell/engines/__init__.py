"""Engine adapters (launch command, readiness, metric names) and the servers kapell ships."""
