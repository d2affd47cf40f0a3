"""The `web:` section of pingr.yaml: the dashboard's sessions and the public status page."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from pingr.configbase import Duration, Strict


def _text(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    return value


class StatusComponent(Strict):
    """One line of the status page: a public name over one or more targets (by name)."""

    name: str = Field(min_length=1, max_length=100, description="the name the public sees")
    targets: list[str] = Field(min_length=1, description="target names; the worst one counts")
    description: str | None = Field(None, max_length=500)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _text(value)


class StatusGroup(Strict):
    """A heading on the status page with its components."""

    name: str = Field(min_length=1, max_length=100)
    components: list[StatusComponent] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _text(value)


class StatusPageConfig(Strict):
    """The public status page at /status (no key needed): off until you choose what it shows.

    It shows only the public names chosen here, never a host, URL, error or target name.
    """

    enabled: bool = False
    title: str = Field("Service status", min_length=1, max_length=200)
    description: str | None = Field(None, max_length=1000)
    groups: list[StatusGroup] = Field(default_factory=list)
    #: Open status-page event streams (GET /status/events) at once; more are refused (503).
    max_clients: int = Field(50, ge=1, le=10_000)

    @model_validator(mode="after")
    def _components(self) -> StatusPageConfig:
        names = [c.name for g in self.groups for c in g.components]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate component name {dupes[0]!r}")
        if self.enabled and not names:
            raise ValueError("an enabled status page needs at least one group with a component")
        return self

    def component_targets(self) -> list[tuple[tuple[int | str, ...], str]]:
        """(location below status_page, target name) of every target a component names."""
        return [(("groups", gi, "components", ci, "targets", ti), name)
                for gi, g in enumerate(self.groups) for ci, c in enumerate(g.components)
                for ti, name in enumerate(c.targets)]


class WebConfig(Strict):
    """The `web:` section: the dashboard at / and the public status page at /status."""

    #: The dashboard (sign in with an API key). Off: / answers 404 and nothing of it loads.
    dashboard: bool = True
    #: A dashboard sign-in lasts this long, then the key is asked for again.
    session_lifetime: Duration = Field(12 * 3600, ge=300, le=30 * 86400)
    status_page: StatusPageConfig = Field(default_factory=StatusPageConfig)
