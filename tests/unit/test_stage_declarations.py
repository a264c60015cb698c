"""Stages declare themselves: the `stages:` model, the metrics and the chain all come from `STAGE_ORDER`."""

from __future__ import annotations

from importlib import import_module

import pytest

from proxy.metrics import Metrics
from proxy.pipeline import StageFactory
from proxy.policy.schema import Policy, Route
from proxy.policy.stage_order import STAGE_ORDER, StagesConfig
from proxy.policy.stage_spec import MetricSpec, StageSpec


def test_names_are_unique_and_the_order_is_the_documented_one():
    names = [spec.name for spec in STAGE_ORDER]
    assert len(set(names)) == len(names)
    assert names.index("auth") == 0 and names[-2:] == ["redaction", "usage"]


def test_the_stages_model_has_one_field_per_declared_setting_in_chain_order():
    declared = [spec.name for spec in STAGE_ORDER if spec.settings is not None]
    assert list(StagesConfig.model_fields) == declared
    for spec in STAGE_ORDER:
        if spec.settings is None:
            continue
        default = StagesConfig().__getattribute__(spec.name)
        assert (default is not None) == spec.default_on
        assert StagesConfig.model_fields[spec.name].description.startswith(spec.description)


@pytest.mark.parametrize("spec", STAGE_ORDER, ids=lambda spec: spec.name)
def test_each_implementation_builds_factories_named_as_declared(spec: StageSpec):
    module = import_module(spec.implementation)
    assert callable(module.build)
    factories = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, StageFactory)]
    own = [f for f in factories if f.__module__ == module.__name__]
    assert own and all(f.name == spec.name for f in own)


def test_every_declared_metric_is_registered_once():
    metrics = Metrics()
    declared = [m for spec in STAGE_ORDER for m in spec.metrics]
    assert len({m.attr for m in declared}) == len(declared)
    names = {family.name for family in metrics.registry.collect()}
    for metric in declared:
        assert getattr(metrics, metric.attr) is not None
        assert metric.name.removesuffix("_total") in names


def test_an_undeclared_metric_is_a_clear_error():
    with pytest.raises(AttributeError, match="no metric 'nope' is declared"):
        Metrics().nope  # noqa: B018


def test_a_misspelt_stage_key_is_refused():
    with pytest.raises(Exception, match="cahce"):
        Policy.model_validate(
            {
                "upstreams": {"u": {"url": "http://x"}},
                "routes": [{"prefix": "/", "upstream": "u"}],
                "stages": {"cahce": {}},
            }
        )


def test_route_overrides_use_the_same_model():
    route = Route.model_validate({"prefix": "/", "upstream": "u", "stages": {"redaction": {"mode": "off"}}})
    assert isinstance(route.stages, StagesConfig)


def test_metric_spec_kinds_build_collectors():
    from prometheus_client import CollectorRegistry

    from proxy.metrics import _collector

    registry = CollectorRegistry()
    for kind in ("counter", "gauge", "histogram"):
        _collector(MetricSpec(f"x_{kind}", kind, f"x_{kind}", "doc", ("a",)), registry)
    assert {f.name for f in registry.collect()} == {"x_counter", "x_gauge", "x_histogram"}
