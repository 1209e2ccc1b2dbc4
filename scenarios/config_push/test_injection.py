"""Injection attempts against a live load balancer: every hostile value of
fixtures/hostile-values.yaml, put into every field of the deployed model in turn, is refused
before anything is sent; the amphora keeps the config it had and keeps serving."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator

import pytest
import yaml

from harness.model.loadbalancer import Model, ModelError
from harness.paths import FIXTURES_DIR

HOSTILE = [*yaml.safe_load((FIXTURES_DIR / "hostile-values.yaml").read_text()), "x" * 5000]


def fields_of(obj: Model, path: tuple = ()) -> Iterator[tuple]:
    """Paths (tuples of attribute names and list indexes) to every field in the tree."""
    for field in dataclasses.fields(obj):
        if field.name == "pem":
            continue  # uploaded as a file, never rendered
        value = getattr(obj, field.name)
        yield (*path, field.name)
        if isinstance(value, Model):
            yield from fields_of(value, (*path, field.name))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, Model):
                    yield from fields_of(item, (*path, field.name, index))


def put(obj, path: tuple, value) -> None:
    *parents, last = path
    for step in parents:
        obj = obj[step] if isinstance(step, int) else getattr(obj, step)
    setattr(obj, last, value)


@pytest.mark.driver_specific(
    "harness", reason="the hostile values are refused by our model's grammars before any driver "
    "runs; Octavia's API validates a load balancer before its driver sees it, so under Octavia's "
    "driver this would check our model again, not the driver")
def test_every_hostile_value_in_every_field_is_refused_and_the_amphora_is_untouched(
    load, deploy, amphora, vip_url, until
):
    lb = load("l7")
    controller = deploy(lb)
    until(vip_url(80), lambda a: set(a) == {"m1"})
    before = amphora.client.get_config(lb.id)
    pristine = copy.deepcopy(lb)
    paths = list(fields_of(lb))
    assert len(paths) > 50

    accepted = []
    for path in paths:
        for hostile in HOSTILE:
            controller.lb = copy.deepcopy(pristine)
            put(controller.lb, path, hostile)
            try:
                controller.update()
            except ModelError:
                continue
            accepted.append((path, hostile))
    controller.lb = pristine

    assert accepted == []
    assert amphora.client.get_config(lb.id) == before
    until(vip_url(80), lambda a: set(a) == {"m1"})

