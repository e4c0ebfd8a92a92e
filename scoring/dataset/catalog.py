"""The Iceberg catalog a run publishes to, configured the way pyiceberg users configure it.

``--catalog NAME`` (default: pyiceberg's default name, ``default``) is looked up in pyiceberg's own
configuration, read afresh at each call: ``PYICEBERG_CATALOG__<NAME>__<KEY>`` variables and
``.pyiceberg.yaml`` in ``PYICEBERG_HOME``, the home directory or the working directory. Glue
(``type: glue``), REST catalogs (S3 Tables, Polaris, Nessie: ``type: rest``) and SQL catalogs come
from there. A name with no configuration at all gets the embedded default, for a laptop: a SQL
catalog on SQLite, ``warehouse/catalog.db``, with its warehouse beside it (``warehouse/``), in the
working directory, created on first use.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from scoring.errors import OutputError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

log = logging.getLogger(__name__)

# The embedded catalog's directory, relative to the working directory, when NAME is not configured.
EMBEDDED_DIR = "warehouse"
EMBEDDED_DB = "catalog.db"


def catalog_properties(name: str | None) -> tuple[str, dict[str, str] | None]:
    """The catalog's name and its pyiceberg configuration; None when the name is not configured."""
    from pyiceberg.utils.config import Config

    config = Config()
    name = name or config.get_default_catalog_name()
    found = config.get_catalog_config(name)
    return name, None if found is None else {k: str(v) for k, v in found.items()}


def embedded_properties(directory: str = EMBEDDED_DIR) -> dict[str, str]:
    """The embedded SQL catalog's properties: SQLite in ``directory``, its warehouse beside it."""
    root = os.path.abspath(directory)
    return {
        "type": "sql",
        "uri": f"sqlite:///{root}/{EMBEDDED_DB}",
        "warehouse": f"file://{root}",
    }


def open_catalog(name: str | None = None) -> Catalog:
    """The catalog ``name`` (pyiceberg's configuration), or the embedded SQLite one when it has none.

    Raises:
        OutputError: The configuration does not make a catalog (a missing URI, an unknown type).
    """
    name, properties = catalog_properties(name)
    if properties is None:
        properties = embedded_properties()
        os.makedirs(properties["uri"].removeprefix("sqlite:///").rsplit("/", 1)[0], exist_ok=True)
        log.info(
            "catalog %r is not configured: using the embedded SQLite catalog %s", name, properties["uri"]
        )
    try:
        return _load(name, properties)
    except (ValueError, ImportError) as e:
        raise OutputError(f"catalog {name!r}: {e}") from e


def _load(name: str, properties: dict[str, str]) -> Catalog:
    """``load_catalog``, tried twice when a new SQL catalog's tables were being created by another process.

    pyiceberg's SQL catalog creates its tables when first opened; two runs opening a new SQLite
    catalog at once can both try, and the loser's ``CREATE TABLE`` fails although the tables exist.
    """
    from pyiceberg.catalog import load_catalog

    try:
        from sqlalchemy.exc import OperationalError
    except ImportError:  # no SQL catalog support installed: nothing to retry
        return load_catalog(name, **properties)
    try:
        return load_catalog(name, **properties)
    except OperationalError:
        return load_catalog(name, **properties)
