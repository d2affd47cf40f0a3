"""Collectors: probes whose target is the machine itself (host metrics, Pi health, Docker)."""
