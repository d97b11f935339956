# Stand-in for the official oliver006/redis_exporter image, built from Debian bookworm's
# prometheus-redis-exporter package. Same interface: /redis_exporter as the entrypoint, flags or
# REDIS_* environment variables for settings, an unprivileged user, port 9121.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus-redis-exporter \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/bin/prometheus-redis-exporter /redis_exporter
USER 59000:59000
EXPOSE 9121
ENTRYPOINT ["/redis_exporter"]
