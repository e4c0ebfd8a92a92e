r"""spark-submit entry point of ad hoc backfills outside Airflow.

    spark-submit jobs/backfill.py --model-uri models:/NAME@ALIAS --input PATH \
        (--output PATH | --table NAMESPACE.TABLE [--catalog NAME]) \
        --start YYYY-MM-DD --end YYYY-MM-DD [--force] [the other flags of jobs/score.py]

Dates run in order with the model pinned once; dates already published by the same model version
are skipped unless ``--force``; the report lists each date, and the exit code is 1 if any failed.
"""

import sys

from scoring.cli import main

if __name__ == "__main__":
    sys.exit(main(["backfill", *sys.argv[1:]]))
