"""Notifications through apprise: URLs, messages, the policy of who is told what, delivery."""
