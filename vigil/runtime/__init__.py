"""The supervisor runtime (watchdog, workers, fallbacks, fault injection). Arrives with the
supervisor work; the flight recorder it writes into is :mod:`vigil.auditlog`."""

__all__: list[str] = []
