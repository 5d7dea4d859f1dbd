"""The service; it has no public import API (start it with ``python -m app``)."""
