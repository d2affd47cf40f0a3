"""MQTT: Home Assistant discovery, retained state, commands (and the fleet, later)."""
