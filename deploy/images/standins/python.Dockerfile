# Stand-in for the official python:3.11-slim, built from Debian bookworm's own Python 3.11 where
# no image registry is reachable (deploy/images/standins.py tags it python:3.11-slim). It offers
# what the services' Dockerfiles rely on: `python` and `pip` on PATH, pip installing into the
# system interpreter as root, and `useradd`.
ARG BASE
FROM ${BASE}
# Debian marks its interpreter as externally managed (PEP 668); the official image does not, and
# the services' Dockerfiles run a plain `pip install .` as root, so the marker goes.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \
 && ln -s /usr/bin/python3 /usr/local/bin/python \
 && ln -s /usr/bin/python3 /usr/local/bin/python3.11 \
 && ln -s /usr/bin/pip3 /usr/local/bin/pip \
 && ln -s /usr/bin/pip3 /usr/local/bin/pip3.11
ENV LANG=C.UTF-8 PYTHON_VERSION=3.11
CMD ["python3"]
