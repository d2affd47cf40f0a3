"""The HTTP API: one module per resource; `asgi.create_api` builds the application."""
