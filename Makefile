# Entry points of the HA session kit. Every target sets itself up first (`make setup`),
# so `make demo` and `make test` work on a fresh Debian machine.

PYTHON_SYSTEM ?= python3
VENV          := .venv
PY            := $(VENV)/bin/python
STAMP         := $(VENV)/.installed
TOPOLOGY      := $(PY) -m deploy.local
# The oldest redis-py pyproject.toml allows, read from it so the two cannot drift apart.
REDIS_FLOOR   := $(shell sed -n 's/.*"redis\[hiredis\]>=\([0-9.]*\).*/\1/p' pyproject.toml)
VENV_MIN      := .venv-min
PY_MIN        := $(VENV_MIN)/bin/python
STAMP_MIN     := $(VENV_MIN)/.installed
# `make up-local SECURE=1`, `make demo SECURE=1`: TLS only and ACL users (DESIGN.md §3b).
SECURE        ?=
SECURE_FLAG   := $(if $(filter 1 yes true,$(SECURE)),--secure)
# `make up-local HAPROXY=1`: also HAProxy on 127.0.0.1:6390, an endpoint that always leads to
# the current master, for clients that cannot ask Sentinel (off by default).
HAPROXY       ?=
HAPROXY_FLAG  := $(if $(filter 1 yes true,$(HAPROXY)),--haproxy)
# `make up-local MODE=cluster`, `make demo MODE=cluster`: a Redis Cluster on 7001-7006 instead of
# Sentinel (DESIGN.md §3a), gateway and cart in Cluster mode.
MODE          ?=
MODE_FLAG     := $(if $(MODE),--mode $(MODE))
# `make up-ha TLS=1`: the compose stack with TLS (deploy/compose/tls.yml); certificates are
# issued on the host with the project's Python, hence `setup` first.
TLS           ?=
HA_TLS        := $(if $(filter 1 yes true,$(TLS)),1,0)
# `make up-ha MODE=cluster`: the compose stack on a Redis Cluster (docker-compose.cluster.yml).
HA_MODE       := $(if $(MODE),$(MODE),sentinel)

.DEFAULT_GOAL := help
.PHONY: help setup system-packages test test-unit test-integration test-packaging test-helm test-compose \
        test-min-deps up-ha down-ha ps-ha test-observability dashboard-png bench lint typecheck \
        up-local down-local status-local demo clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

system-packages:
	@bash scripts/ensure-system-packages.sh --with-optional --with-bench

$(STAMP): pyproject.toml
	$(PYTHON_SYSTEM) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: system-packages $(STAMP) ## create .venv, install the project and Redis when missing

# Two pytest-xdist workers, one test file each at a time: most tests wait on Redis (failovers,
# timeouts), not on the CPU. The chaos suite runs alone afterwards: the load and timings under
# a fault are what it measures, and its partitions change the host's routing rules.
XDIST         := -n 2 --dist loadfile

test: setup lint typecheck ## everything CI runs: lint, types, unit, integration, the installed wheel, oldest redis-py
	$(PY) -m pytest -q -p no:cacheprovider $(XDIST) --durations=25 --ignore=tests/chaos tests
	$(PY) -m pytest -q -p no:cacheprovider --durations=10 tests/chaos
	$(MAKE) --no-print-directory test-min-deps

test-unit: setup ## fast iteration: unit tests only
	$(PY) -m pytest -q tests/unit

test-integration: setup ## tests against real Redis / Sentinel processes
	$(PY) -m pytest -q tests/integration

test-packaging: setup ## build the sdist and wheel, install the wheel in a fresh venv, run apps there (~1 min)
	$(PY) -m pytest -q -p no:cacheprovider tests/packaging

$(STAMP_MIN): pyproject.toml
	@test -n "$(REDIS_FLOOR)" || { echo 'no "redis[hiredis]>=X" in pyproject.toml' >&2; exit 1; }
	$(PYTHON_SYSTEM) -m venv $(VENV_MIN)
	$(PY_MIN) -m pip install -q --upgrade pip
	$(PY_MIN) -m pip install -q -e '.[dev]' 'redis[hiredis]==$(REDIS_FLOOR)'
	@touch $(STAMP_MIN)

# The wheel holds sessionlib only: the local topology tool's own tests (deploy/local, which
# users do not install) run once, in `make test`, not again on the oldest redis-py.
MIN_DEPS_SKIP := --ignore=tests/integration/test_local_topology.py \
                 --ignore=tests/integration/test_local_cluster.py

test-min-deps: system-packages $(STAMP_MIN) ## unit and integration tests on the oldest redis-py pyproject allows
	@mkdir -p .run
	$(PY_MIN) -m pytest -q -p no:cacheprovider $(XDIST) --durations=10 \
		--basetemp=.run/pytest-min-deps $(MIN_DEPS_SKIP) tests/unit tests/integration

test-compose: setup ## docker-compose.ha.yml (plain, TLS) and docker-compose.cluster.yml for real: private dockerd, images built here, a failover each
	bash scripts/ensure-system-packages.sh --with-docker
	SESSIONLIB_COMPOSE_ENGINE=1 $(PY) -m pytest -q -p no:cacheprovider tests/compose

up-ha: $(if $(filter 1,$(HA_TLS)),setup) ## the compose HA stack (docker-compose.ha.yml; MODE=cluster: docker-compose.cluster.yml), Compose v2 or v1; makes .env on first use (TLS=1: TLS + ACL)
	HA_TLS=$(HA_TLS) HA_MODE=$(HA_MODE) bash deploy/compose/ha.sh up

down-ha: ## stop the compose stack (volumes kept; `deploy/compose/ha.sh down -v` drops them; TLS=1 as for up-ha)
	HA_TLS=$(HA_TLS) HA_MODE=$(HA_MODE) bash deploy/compose/ha.sh down

ps-ha: ## containers of the compose stack and their health
	HA_TLS=$(HA_TLS) HA_MODE=$(HA_MODE) bash deploy/compose/ha.sh ps

test-observability: setup ## promtool rule tests, dashboards, every panel and rule against a live Prometheus
	$(PY) -m pytest -q -p no:cacheprovider tests/observability

dashboard-png: setup ## redraw docs/img/{session-store,redis-cluster}-dashboard.png from live runs, Sentinel and Cluster (~80 s)
	SESSIONLIB_DASHBOARD_PNG=docs/img/session-store-dashboard.png \
	SESSIONLIB_CLUSTER_DASHBOARD_PNG=docs/img/redis-cluster-dashboard.png \
	$(PY) -m pytest -q -p no:cacheprovider tests/observability/test_live_observability.py -k png

test-helm: setup ## the Helm chart: strict lint, renders, Kubernetes 1.29/1.33 schemas, pod scripts vs real Redis
	$(PY) -m pytest -q -p no:cacheprovider tests/helm

bench: setup ## benchmarks vs raw redis-py and starsessions, Cluster vs Sentinel mode, same run (about 9 min); writes bench/results/latest.json
	$(PY) -m bench

lint: setup ## ruff on everything
	$(VENV)/bin/ruff check sessionlib services deploy tests bench

typecheck: setup ## mypy --strict on the library
	$(VENV)/bin/mypy sessionlib

demo: setup ## the main job: the local HA stack, a login, a cart, a killed master, nothing lost (SECURE=1: TLS + ACL; MODE=cluster: Redis Cluster)
	$(PY) -m deploy.local.demo $(MODE_FLAG) $(SECURE_FLAG)

up-local: setup ## start 3 Redis + 3 Sentinels + gateway + cart (+ redis_exporter, Prometheus when installed) on 127.0.0.1 (SECURE=1: TLS + ACL; HAPROXY=1: master endpoint; MODE=cluster: Redis Cluster 7001-7006 + gateway + cart + the same exporter/Prometheus)
	$(TOPOLOGY) up $(MODE_FLAG) $(SECURE_FLAG) $(HAPROXY_FLAG)

down-local: setup ## stop everything up-local started
	$(TOPOLOGY) down

status-local: setup ## where everything is and who is master
	$(TOPOLOGY) status

clean: down-local ## stop the topology and remove .run/, .venv/ and .venv-min/
	rm -rf .run $(VENV) $(VENV_MIN)

.PHONY: chaos
chaos: setup ## kill, pause and partition Redis under load (full profile); report in .run/chaos/
	rm -f .run/chaos/chaos-report.json .run/chaos/*.png
	CHAOS_PROFILE=full $(PY) -m pytest -q -p no:cacheprovider -m chaos tests/chaos; \
	status=$$?; $(PY) -m tests.chaos.report; exit $$status
