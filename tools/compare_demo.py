"""Whether two demo runs wrote the same scores and equivalent manifests (a refactor's check).

Run ``scoring demo`` at two commits into two work directories, then::

    .venv/bin/python tools/compare_demo.py OLD_WORKDIR NEW_WORKDIR

Every published date of the output directory and of the lineup's must have the same columns and the
same values row for row (sorted by ``customer_id``); its manifest the same keys and values once the
work directory's path is the same in both, but for what differs between any two runs (timestamps,
run ids, the MLflow runs the demo registers). Prints a line a date; exits 1 at the first difference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

# What two runs of the same demo never share.
VOLATILE = ("started_at", "finished_at", "run_id")


def differences(old: object, new: object, path: str = "") -> list[str]:
    """Where two manifests differ, as dotted paths; a key named in ``VOLATILE`` is not compared."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = [f"{path}.{k}: in one only" for k in sorted(set(old) ^ set(new))]
        for key in sorted(set(old) & set(new)):
            if key not in VOLATILE:
                found += differences(old[key], new[key], f"{path}.{key}")
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            d
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for d in differences(a, b, f"{path}[{i}]")
        ]
    return [] if old == new else [path or "."]


def compare(old_root: Path, new_root: Path) -> int:
    """Compare every published date of both work directories; 0 when they agree."""
    for dataset in ("output", "lineup"):
        for old_date in sorted((old_root / dataset).glob("date=*")):
            new_date = new_root / dataset / old_date.name
            old = pq.read_table(old_date).to_pandas().sort_values("customer_id", ignore_index=True)
            new = pq.read_table(new_date).to_pandas().sort_values("customer_id", ignore_index=True)
            if list(old.columns) != list(new.columns) or not old.equals(new):
                print(f"{dataset} {old_date.name}: the scores differ")
                return 1
            manifests = [
                json.loads((date / "_manifest.json").read_text().replace(str(root), "WORKDIR"))
                for date, root in ((old_date, old_root), (new_date, new_root))
            ]
            found = differences(*manifests)
            if found:
                print(f"{dataset} {old_date.name}: the manifests differ at {', '.join(found)}")
                return 1
            same = f"{len(old):,} rows equal in {len(old.columns)} columns"
            print(f"{dataset} {old_date.name}: {same}; manifests agree")
    return 0


if __name__ == "__main__":
    sys.exit(compare(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()))
