"""The Dagger door's functions as the Python SDK reads them (its own resolver, no engine; the
calls through `dagger call` run in tests/e2e/test_dagger_call.py): the settings' arguments
are declared once and reach the core as one mapping of overrides."""

from __future__ import annotations

import anyio
import pytest
from dagger.mod._module import FUNCTION_DEF_KEY
from dagger.mod._resolver import Function

from pipeline.doors import module
from pipeline.planning.settings import setting_doc

PLANNING = {
    "plan": ["tag", "registry", "platforms", "components"],
    "release": ["tag", "registry", "platforms", "components"],
    "export": ["tag", "platforms", "components"],
    "offline_bundle": ["tag", "registry", "platforms", "components"],
}
FIELDS = {
    "tag": "image_tag",
    "registry": "private_registry",
    "platforms": "target_platforms",
    "components": "components",
}


def resolver(name: str) -> Function:
    fn = getattr(module.AiInfraMatrix, name)
    return Function(fn, getattr(fn, FUNCTION_DEF_KEY))


@pytest.mark.parametrize("name", PLANNING)
def test_each_function_takes_the_settings_it_plans_with_and_their_docs(name):
    parameters = resolver(name).parameters
    for argument in PLANNING[name]:
        given = parameters[argument]
        assert given.is_nullable and given.signature.default is None
        assert given.doc.startswith(setting_doc(FIELDS[argument]).help)
    assert "settings" not in parameters
    assert {a for a in FIELDS if a in parameters} == set(PLANNING[name])  # export: no registry


class Planned(Exception):
    """Stops the call where it would plan, with what it would plan with."""


@pytest.mark.parametrize("name", PLANNING)
def test_a_call_hands_the_given_settings_to_the_plan_as_overrides(name, monkeypatch):
    async def planned(self, overrides):
        raise Planned(overrides)

    monkeypatch.setattr(module.AiInfraMatrix, "_plan", planned)
    function = resolver(name).bind_parent(module.AiInfraMatrix(source=None))
    bound = function.bind_arguments(tag="v9", components="a,b")
    with pytest.raises(Planned) as caught:
        anyio.run(lambda: function.wrapped(*bound.args, **bound.kwargs))
    wanted = {FIELDS[a]: None for a in PLANNING[name]} | {"image_tag": "v9", "components": "a,b"}
    assert caught.value.args[0] == wanted
