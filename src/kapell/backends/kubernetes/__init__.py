"""Kubernetes backend: server-side apply of kapell's children (Pods, ResourceClaims, ...)."""
