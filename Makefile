# nimbus.compute — `make demo` and `make test` set everything up on a fresh Debian 12 machine (root).
SHELL := /bin/bash
.DEFAULT_GOAL := help
ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
COLLECTIONS := $(ROOT)/.collections
LINK := $(COLLECTIONS)/ansible_collections/nimbus/compute
PIP_VERSION := 26.3
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_PYTHON_INTERPRETER := $(PY)
export PATH := $(VENV)/bin:$(PATH)

.PHONY: help setup packages venv link lab image nova-venv fleet demo demo-clean test unit integration lint sanity ruff ansible-lint bench test-full clean

help:
	@echo "make demo   - set up this machine and boot a real server from the embedded image"
	@echo "make test   - set up this machine and run every check (lint, sanity, unit, integration)"
	@echo "make demo-clean, make bench, make test-full, make clean"

packages:
	@bash tests/lab/install.sh

# The venv is rebuilt only when the pinned requirements change.
$(VENV)/.stamp: requirements.txt requirements-dev.txt constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q pip==$(PIP_VERSION)
	@$(PY) -m pip install -q -r requirements-dev.txt -c constraints.txt
	@touch $@

venv: packages $(VENV)/.stamp

link:
	@mkdir -p $(dir $(LINK))
	@if [ "$$(readlink -f $(LINK))" != "$(ROOT)" ]; then rm -f $(LINK); ln -s $(ROOT) $(LINK); fi

lab: packages
	@bash tests/lab/start.sh

image: venv
	@$(PY) tests/lab/guest_image.py

# Three emulated hypervisors (own libvirtd each, own mount namespace): docs/fleet.md
fleet: link lab
	@$(PY) tests/lab/fleet.py start

# Nova 34 from PyPI in its own venv, only for the equivalence tests and the scheduler benchmark.
nova-venv:
	@bash tests/nova/setup_venv.sh

setup: venv link lab image nova-venv fleet

# The demo needs one hypervisor (this machine's libvirt): no Nova venv, no fleet.
demo: venv link lab image
	ansible-playbook -i localhost, -c local playbooks/demo.yml -e @.cache/guest/images.json

demo-clean: venv link lab
	ansible-playbook -i localhost, -c local playbooks/demo_delete.yml

ruff: venv
	ruff check .

ansible-lint: venv link
	ansible-lint --profile production roles playbooks

sanity: venv
	@bash tests/sanity.sh

lint: ruff ansible-lint

unit: setup
	pytest -m "not integration" tests/unit

integration: setup
	pytest -m integration tests

# Integration tests fail (not skip) under make test when the lab cannot start.
test: setup lint sanity
	NIMBUS_REQUIRE_LAB=1 pytest tests

test-full: setup lint sanity
	NIMBUS_REQUIRE_LAB=1 NIMBUS_FULL=1 pytest tests

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(COLLECTIONS) tests/output .pytest_cache .ruff_cache /tmp/nimbus-sanity
