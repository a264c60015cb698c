"""The keys of what the application holds, shared by the app and its admin sub-application."""

from __future__ import annotations

from aiohttp import web

from proxy.handler import ProxyHandler
from proxy.metrics import Metrics
from proxy.policy.reload import PolicyHolder
from proxy.services import Services

POLICY = web.AppKey("policy", tuple)
METRICS = web.AppKey("metrics", Metrics)
SERVICES = web.AppKey("services", Services)
HOLDER = web.AppKey("holder", PolicyHolder)
HANDLER = web.AppKey("handler", ProxyHandler)
STARTED = web.AppKey("started", float)
TRACER_PROVIDER = web.AppKey("tracer_provider", object)
