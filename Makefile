# The two set-up commands of README.md: `make serve` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# Ray must never report usage over the network.
export RAY_USAGE_STATS_ENABLED=0

# The exact releases the suite last passed with (see README, "Dependency policy"); `make constraints`
# resolves them afresh, on purpose. CONSTRAINTS= installs without them.
CONSTRAINTS ?= constraints.txt
EXTRAS := test,bench,convert

.PHONY: serve test install constraints

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[$(EXTRAS)]'
	touch $@

# Resolve every dependency anew in a throwaway venv and write what pip chose to constraints.txt.
# Run `make test` on the result before committing it.
constraints:
	rm -rf /tmp/facegraph-constraints
	python3 -m venv /tmp/facegraph-constraints
	/tmp/facegraph-constraints/bin/python -m pip install -q --upgrade pip
	/tmp/facegraph-constraints/bin/python -m pip install -q '.[$(EXTRAS),postgres]'
	{ echo "# What make installs: the releases pip resolved on $$(date -u +%F) for CPython $$(/tmp/facegraph-constraints/bin/python -c 'import platform; print(platform.python_version())'), written by make constraints."; \
	  /tmp/facegraph-constraints/bin/python -m pip freeze --exclude facegraph; } > constraints.txt
	rm -rf /tmp/facegraph-constraints

serve: install
	$(VENV)/bin/facegraph models build
	$(VENV)/bin/facegraph serve $(ARGS)

# The import contracts of pyproject.toml first (README, Layout). Tests start Ray: run them in private
# network and PID namespaces with only loopback.
# The default model pack is built first (its one download needs the network), and the PostgreSQL
# gallery's test server (Debian's PostgreSQL with pgvector) installed when missing.
test: install
	$(VENV)/bin/lint-imports
	$(VENV)/bin/facegraph models build
	bash tests/install-pgvector.sh
	unshare -n -p -f --mount-proc sh -c 'ip link set lo up && exec $(PY) -m pytest -q $(PYTEST_ARGS)'
