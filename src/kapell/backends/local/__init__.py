"""The local backend: replicas as child processes, state in SQLite, an admin API on loopback."""
