"""Physical alerting through gpiozero: relays, LEDs, buzzers, RGB LEDs, towers and a button."""
