r"""spark-submit entry point of the scoring job.

    spark-submit jobs/score.py --model-uri models:/NAME@ALIAS --input PATH \\
        (--output PATH | --table NAMESPACE.TABLE [--catalog NAME]) \\
        --date YYYY-MM-DD [--id-column id] [--partition-column date] [--keep-columns a,b] \\
        [--batch-size N] [--backend auto|pyfunc|onnx] [--device auto|cpu|cuda]

The flags are those of ``scoring score`` (see ``scoring score --help``); the ``scoring`` package must be
installed in the Python that runs the driver and the executors (``PYSPARK_PYTHON``). With ``--table``
the driver opens the pyiceberg catalog ``--catalog`` from pyiceberg's configuration
(``PYICEBERG_CATALOG__<NAME>__*`` variables, ``.pyiceberg.yaml``); on EMR the DAG's step sets those
variables for a Glue catalog (``scoring.orchestration.emr.scoring_step``).
"""

import sys

from scoring.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
