#!/bin/bash
# EMR bootstrap action, run on every node before Spark starts: a Python 3.11 virtualenv at
# /opt/scoring/venv with the scoring wheel and ONNX Runtime (the CUDA build on GPU nodes).
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
aws s3 cp --only-show-errors "$wheel_uri" "$work/"
# EMR provides Spark and its pyspark: install the wheel without the pip pyspark it declares.
sudo /opt/scoring/venv/bin/pip install --quiet --no-deps "$work"/*.whl
if [ "$flavour" = gpu ] && lspci | grep -qi nvidia; then
  onnxruntime=onnxruntime-gpu
else
  onnxruntime=onnxruntime
fi
sudo /opt/scoring/venv/bin/pip install --quiet "mlflow-skinny>=3.1,<4" "$onnxruntime>=1.20" \
  "pyarrow>=15,<26" "pandas>=2.2,<3" "numpy>=1.26" scikit-learn
rm -rf "$work"
