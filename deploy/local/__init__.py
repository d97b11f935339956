"""The local, process-based Redis HA topology (no Docker) and the bookkeeping behind it.
Run it with `python -m deploy.local --help`; tests use `LocalTopology` through fixtures."""
