"""Controllers, one per kind: reconcile(key) -> requeue_after. They act through the Backend protocol."""
