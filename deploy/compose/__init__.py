"""The compose stack's helpers: the Redis entrypoint, the host-network and TLS overrides, the
TLS variant's certificates and a private Docker engine for running docker-compose.ha.yml for
real in tests."""
