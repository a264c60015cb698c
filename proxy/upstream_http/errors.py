"""The client's failures, told apart by when they happened: what a retry policy needs to know."""

from __future__ import annotations


class UpstreamHTTPError(Exception):
    """Base of the client's failures."""


class ConnectFailed(UpstreamHTTPError):
    """No connection could be opened: nothing was sent."""


class ConnectTimeout(UpstreamHTTPError):
    """Opening the connection (TLS included) took longer than allowed: nothing was sent."""


class ClosedBeforeAnswer(UpstreamHTTPError):
    """The connection closed, or the answer was not HTTP, before a whole response head arrived."""


class BodyBroken(UpstreamHTTPError):
    """The body was cut before its end, or was malformed."""
