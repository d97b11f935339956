# Stand-in for the official redis image, built from Debian bookworm's redis-server and
# redis-sentinel packages (deploy/images/standins.py tags it with the version compose names).
# Same interface: /data as the working directory and volume, a `redis` user, and a
# docker-entrypoint.sh that drops root before starting redis-server.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server redis-sentinel redis-tools \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data \
 && chown redis:redis /data
COPY redis-docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 0755 /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
VOLUME /data
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
