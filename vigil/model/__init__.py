"""The reference model and signed model artifacts. Arrives with the model work."""

__all__: list[str] = []
