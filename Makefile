# Two commands: `make run` (the product, embedded: PostgreSQL from a pip wheel + filesystem broker)
# and `make test` (the whole suite against PostgreSQL and Redis on localhost).
# Dependencies: requirements.in (runtime) and requirements-dev.in (tests, lint, types, demo) are
# compiled by `make requirements` into requirements.txt and requirements-dev.txt, every package
# pinned with hashes. Production installs requirements.txt only; these targets the dev set.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum requirements-dev.txt | cut -d' ' -f1)
PIP := $(BIN)/pip install --quiet --disable-pip-version-check
COMPILE := $(BIN)/uv pip compile --quiet --python-version 3.11 --generate-hashes --no-header --annotation-style line

.PHONY: install run test lint format typecheck deploy-check migrate clean chromium requirements

$(STAMP): requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) --require-hashes -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

## Recompile the pinned files after editing requirements.in or requirements-dev.in (or to upgrade:
## `make requirements UPGRADE=--upgrade`). The dev set is constrained to the runtime pins.
requirements: install
	$(COMPILE) $(UPGRADE) requirements.in -o requirements.txt
	$(COMPILE) $(UPGRADE) requirements-dev.in -o requirements-dev.txt

## Without DATABASE_URL these run inside `config.embedded_db run`: it starts the embedded PostgreSQL
## (data and socket in var/postgres/) first and stops it after the command.
EMBEDDED_DB := PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m config.embedded_db run --

migrate: install
	$(EMBEDDED_DB) python manage.py migrate --noinput

## The product: web on http://127.0.0.1:8000, a Celery worker and beat, on the embedded PostgreSQL
## unless DATABASE_URL is set; Ctrl-C stops them all, the database last.
run: install
	rm -rf var/prometheus
	$(EMBEDDED_DB) sh -c 'python manage.py migrate --noinput && python manage.py seed_demo && exec honcho start --procfile Procfile'

## The whole suite: lint, types, Django checks (the production deploy check too), then pytest
## against PostgreSQL and Redis.
test: install chromium
	$(BIN)/python tests/check_services.py
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	DJANGO_SETTINGS_MODULE=config.settings_test $(BIN)/python manage.py check --fail-level WARNING
	$(MAKE) --no-print-directory deploy-check
	DJANGO_SETTINGS_MODULE=config.settings_test $(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/pytest --create-db $(PYTEST_ARGS)

## Django's deployment checklist with the production environment (placeholder secrets, no servers needed).
deploy-check: install
	env -u DJANGO_DEBUG -u DJANGO_SETTINGS_MODULE DJANGO_ENV=production DJANGO_ALLOWED_HOSTS=backoffice.example.com \
		DJANGO_SECRET_KEY=deploy-check-$$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n') \
		$(BIN)/python manage.py check --deploy --fail-level WARNING

typecheck: install
	$(BIN)/mypy

## Browser tests drive Debian's chromium (Playwright cannot download its own browser here).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Deletes the demo's state: the embedded database (stopped first), broker queues, metrics.
clean:
	@test ! -x $(BIN)/python || $(BIN)/python -m config.embedded_db stop
	rm -rf var/
