"""The error a command reports to the API: an HTTP status with a message."""

from __future__ import annotations


class AppError(Exception):
    """A problem the API reports as an HTTP status with a message."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail
