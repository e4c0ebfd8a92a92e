# Everything a fresh machine needs: Python 3.11 and Java 17 on PATH; the rest comes from PyPI.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint docs browser loadgen clean dag-demo bench bench-online protos

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

demo: install
	$(VENV)/bin/scoring demo

# ruff, then the import contract of .importlinter (which subpackage may import what).
lint: install
	$(VENV)/bin/ruff check scoring jobs dags tests bench tools setup.py
	$(VENV)/bin/ruff format --check scoring jobs dags tests bench tools setup.py
	$(VENV)/bin/lint-imports --no-cache

# The flag reference, docs/flags.md, from the parser (tests/docs/test_flags.py fails while it is stale).
docs: install
	$(PY) tools/flag_reference.py

test: lint browser loadgen
	$(PY) -m pytest

# Headless Chromium renders the run report in tests/dataset/test_report.py: Debian's package, when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# wrk and h2load, the online benchmark's load generators (its tests run them): Debian's packages, when missing.
loadgen:
	@(command -v wrk >/dev/null 2>&1 && command -v h2load >/dev/null 2>&1) || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nghttp2-client >/dev/null)

clean:
	rm -rf $(VENV) demo-workdir build *.egg-info

# The daily DAG, run once by Airflow on this machine (after `make demo`): scores 2026-11-01 locally.
dag-demo: install
	mkdir -p .airflow
	AIRFLOW_HOME=$(CURDIR)/.airflow AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
		$(VENV)/bin/airflow db migrate >/dev/null
	AIRFLOW_HOME=$(CURDIR)/.airflow AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
		MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/demo-workdir/mlflow.db PATH=$(CURDIR)/$(VENV)/bin:$$PATH \
		$(VENV)/bin/airflow dags test daily_batch_scoring 2026-11-01

# Batch scoring ways, each as a whole process, in interleaved rounds (see BENCHMARKS.md). Writes
# bench-workdir/results.json and the results section of BENCHMARKS.md. At 1M and 4M rows and 3 rounds
# it takes about an hour and a quarter on 2 cores; e.g. `make bench SIZES=1000000,10000000 ROUNDS=1
# BENCH_FLAGS=--gpu`. Several models in one pass, in their own section: `make bench SIZES=1000000
# BENCH_FLAGS="--ways floor,ours_onnx,ours_lineup,ours_pyfunc,ours_retrained --section lineup"`.
# The peers (daft, ray_data) come from setup.py's `bench` extra, installed here (beside requirements.txt,
# so that no pin of the venv moves) and not by `make install`.
SIZES ?= 1000000,4000000
ROUNDS ?= 3
BENCH_FLAGS ?=
bench: install
	$(PY) -m pip install --quiet -r requirements.txt -e ".[bench]"
	$(PY) -m bench --sizes $(SIZES) --rounds $(ROUNDS) --markdown BENCHMARKS.md $(BENCH_FLAGS)

# Online serving: `scoring serve` (ONNX, pyfunc, a scikit-learn pipeline; 1 and 2 workers) and `mlflow models
# serve` on the same models, one at a time on 127.0.0.1, under single-record load: latency at 200 req/s,
# throughput at 1, 8 and 64 clients (wrk, h2load), a burst at 4x capacity. Writes
# bench-workdir/online/results.json and the online section of BENCHMARKS.md. About 10 minutes on 2 cores (the
# first run also trains the models); e.g. `make bench-online ONLINE_FLAGS="--seconds 4"`.
ONLINE_FLAGS ?=
bench-online: install loadgen
	$(PY) -m bench.online --markdown BENCHMARKS.md $(ONLINE_FLAGS)

# Regenerates the gRPC messages and stubs of scoring/serve/pb/ from protos/ (grpcio-tools; commit the result).
protos: install
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. protos/scoring/serve/pb/*.proto
