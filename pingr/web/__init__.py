"""The dashboard (/) and the public status page (/status): server-rendered, every asset shipped."""
