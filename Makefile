.PHONY: run test lint bench

run:  ## install and start millpond (the README's first command)
	./scripts/up

test:  ## run the whole test suite (the README's second command)
	./scripts/test

lint:
	.venv/bin/ruff check src tests benchmarks scripts
	.venv/bin/ruff format --check src tests benchmarks
	.venv/bin/mypy

bench:
	.venv/bin/python benchmarks/query_roundtrip.py
