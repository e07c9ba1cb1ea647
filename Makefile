# backupconsole: `make run` starts the console, `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# The test suite runs against real services (CI has them; `.ci/services` starts them if needed).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/backupconsole
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
TEST_BROKER_URL ?= redis://127.0.0.1:6379/1
TEST_ENV := DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL)

TYPED := backupconsole inventory jobs storage frontend

.PHONY: run test lint schema check-schema services kvm browser vcsim install lock bench clean

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
		{ echo "backupconsole needs Python 3.11 (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	touch $(STAMP)

install: $(STAMP)

## make run: set up and start the all-in-one console on http://127.0.0.1:8000
run: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py runconsole

## make test: set up and run lint, migration check, OpenAPI diff and the whole pytest suite
test: $(STAMP) services kvm browser vcsim
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(TYPED)
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(TEST_ENV) $(BIN)/python manage.py spectacular --validate --fail-on-warn --file /tmp/backupconsole-openapi.yaml
	diff -u docs/openapi.yaml /tmp/backupconsole-openapi.yaml || \
		{ echo "docs/openapi.yaml is stale: run 'make schema' and commit it"; exit 1; }
	$(TEST_ENV) $(BIN)/pytest $(PYTEST_ARGS)

services:
	bash .ci/services

# QEMU, libvirt and the libvirt binding for the KVM connector's tests (installed when root).
kvm: $(STAMP)
	bash .ci/kvm-packages $(VENV)

# Debian's Chromium for the browser tests (tests/browser; Playwright never downloads a browser).
browser:
	bash .ci/browser-packages

# VMware's vSphere simulator plus our backup extensions (tests/vcsim/README.md), built offline
# from Debian's Go and govmomi packages; rebuilt when its sources change.
VCSIM := .cache/vcsim/vcsim-ext
vcsim: $(VCSIM)

$(VCSIM): $(wildcard tests/vcsim/*.go) tests/vcsim/go.mod
	bash .ci/vcsim-packages
	mkdir -p $(@D)
	cd tests/vcsim && GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off GOFLAGS= \
		go build -o $(CURDIR)/$@.tmp .
	mv $@.tmp $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(TYPED)

## make schema: regenerate the committed OpenAPI document
schema: $(STAMP)
	$(BIN)/python manage.py spectacular --validate --fail-on-warn --file docs/openapi.yaml

## make lock: re-resolve dependencies from pyproject.toml into requirements.lock
lock:
	rm -rf /tmp/backupconsole-lock && $(PYTHON) -m venv /tmp/backupconsole-lock
	/tmp/backupconsole-lock/bin/pip install --quiet --upgrade pip
	/tmp/backupconsole-lock/bin/pip install --quiet ".[dev]"
	# libvirt-python builds against libvirt-dev: .ci/kvm-packages installs it where needed.
	/tmp/backupconsole-lock/bin/pip freeze --exclude-editable \
		| grep -v -e '^backupconsole' -e '^libvirt-python' > requirements.lock

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache .mypy_cache

## make bench: storage engine vs restic and borg on a generated 4 GiB disk (prints a table, writes bench/results.json)
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)
