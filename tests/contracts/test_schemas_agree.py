"""The agent's bodies (``node_agent/schemas.py``) and the driver's TypedDicts: one contract."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

from node_agent import schemas
from vm_manager.drivers import base


def typed_dict_fields(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls)


def model_fields(cls: type[BaseModel]) -> dict[str, object]:
    return {name: info.annotation for name, info in cls.model_fields.items()}


@pytest.mark.parametrize(
    ("agent_model", "driver_type"),
    [
        (schemas.VMSpecIn, base.VMSpec),
        (schemas.VMStatusOut, base.VMStatus),
        (schemas.NodeHealthOut, base.NodeHealth),
        (schemas.VMStatsOut, base.VMStats),
        (schemas.ExecOut, base.ExecResult),
        (schemas.FileEntryOut, base.FileEntry),
    ],
    ids=lambda cls: cls.__name__,
)
def test_agent_bodies_and_driver_types_have_the_same_fields_and_types(agent_model, driver_type):
    assert model_fields(agent_model) == typed_dict_fields(driver_type)
