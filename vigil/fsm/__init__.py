"""The safety state machine (pure, clock-free). Its states are already recorded by the flight
log (:class:`vigil.schemas.State`); the machine itself arrives with the supervisor work."""

__all__: list[str] = []
