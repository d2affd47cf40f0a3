"""Probe kinds: one module each (its target model, `run`, optional `prepare`); see registry.py."""
