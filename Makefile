.PHONY: run test lint format

run:  ## set up everything and run web server, local node agent and reconcile loop
	@bash scripts/run-local.sh

test:  ## the whole suite: SQLite + in-memory layer, real VMs, then PostgreSQL + Redis
	bash scripts/test.sh

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format:
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .
