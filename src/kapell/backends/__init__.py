"""Where things actually run: local processes, Kubernetes, or a simulator."""
