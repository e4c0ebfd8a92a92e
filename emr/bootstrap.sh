#!/bin/bash
# EMR bootstrap action, run on every node before Spark starts: a Python 3.11 virtualenv at
# /opt/scoring/venv with emr/requirements-node.txt (onnxruntime's CUDA build on GPU nodes) and the
# scoring wheel.
# spark-env points PYSPARK_PYTHON at it (emr/*.json); Spark itself is EMR's.
#
# Usage (BootstrapActions Args): bootstrap.sh s3://BUCKET/PATH/scoring-VERSION-py3-none-any.whl [cpu|gpu]
set -euo pipefail
wheel_uri="$1"
flavour="${2:-cpu}"

sudo dnf install -y -q python3.11 python3.11-pip
sudo python3.11 -m venv /opt/scoring/venv
sudo /opt/scoring/venv/bin/pip install --quiet --upgrade pip

work=$(mktemp -d)
# The wheel and requirements-node.txt are staged side by side (scoring.orchestration.artifacts).
aws s3 cp --only-show-errors "$wheel_uri" "$work/"
aws s3 cp --only-show-errors "$(dirname "$wheel_uri")/requirements-node.txt" "$work/"
if [ "$flavour" = gpu ] && lspci | grep -qi nvidia; then
  # The same version, built for CUDA.
  sed -i 's/^onnxruntime==/onnxruntime-gpu==/' "$work/requirements-node.txt"
fi
# What a node installs is that one pinned file (CI builds the same venv: tests/test_node_install.py).
sudo /opt/scoring/venv/bin/pip install --quiet -r "$work/requirements-node.txt"
# EMR provides Spark and its pyspark: install the wheel without the pip pyspark it declares.
sudo /opt/scoring/venv/bin/pip install --quiet --no-deps "$work"/*.whl
rm -rf "$work"
