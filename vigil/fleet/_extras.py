"""Optional packages, imported only when a format or a report needs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from vigil.errors import ExtraMissing

EXTRA_OF = {
    "pyarrow": "fleet",
    "pyarrow.parquet": "fleet",
    "duckdb": "fleet",
    "mcap": "mcap",
    "mcap.writer": "mcap",
    "asammdf": "mdf",
    "pyspark": "spark",
}


def need(module: str) -> ModuleType:
    """Import an optional module, or raise :class:`~vigil.errors.ExtraMissing` (DIA-8001)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".", maxsplit=1)[0]
        extra = EXTRA_OF.get(module, "fleet")
        raise ExtraMissing(
            f"{package} is not installed; install it with: pip install 'vigil[{extra}]'",
            package=package,
            extra=extra,
        ) from None
