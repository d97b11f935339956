"""The compose stack's helpers: the Redis entrypoint, the host-network override and a private
Docker engine for running docker-compose.ha.yml for real in tests."""
