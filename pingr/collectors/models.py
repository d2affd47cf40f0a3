"""The collectors' own table: settings changed at run time (thresholds) that outlive a restart."""

from __future__ import annotations

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel


class CollectorSettingRow(SQLModel, table=True):
    """A runtime override of a config section, valid while that section is unchanged.

    `base_hash` is the hash of the config file's section when the override was saved: once the
    file's section is edited, the file wins again (an old override must not hide a new file).
    """

    __tablename__ = "collector_settings"
    key: str = Field(primary_key=True)
    value: str = Field(sa_column=Column(Text, nullable=False))
    base_hash: str
    updated_at: int
