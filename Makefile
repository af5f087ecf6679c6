# The two set-up commands of README.md: `make serve` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# Ray must never report usage over the network.
export RAY_USAGE_STATS_ENABLED=0

.PHONY: serve test install

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

serve: install
	$(VENV)/bin/facegraph models build
	$(VENV)/bin/facegraph serve $(ARGS)

# Tests start Ray: run them in private network and PID namespaces with only loopback.
# The default model pack is built first (its one download needs the network), and the PostgreSQL
# gallery's test server (Debian's PostgreSQL with pgvector) installed when missing.
test: install
	$(VENV)/bin/facegraph models build
	bash tests/install-pgvector.sh
	unshare -n -p -f --mount-proc sh -c 'ip link set lo up && exec $(PY) -m pytest -q $(PYTEST_ARGS)'
