"""pingr: a monitoring appliance that makes outages physical."""

__version__ = "0.1.0"
