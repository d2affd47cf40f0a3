"""Fleet mode: appliances share their state over an MQTT broker and alarm together."""
