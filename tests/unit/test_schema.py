"""The validation schemas are valid cerberus schemas (the build trusts them without checking)."""

from __future__ import annotations

import pytest
from cerberus.schema import DefinitionSchema, SchemaError

from qcompile.compiler.validate import _PARTS, _Validator, part_schema


@pytest.mark.parametrize("part", sorted(_PARTS))
def test_each_schema_part_passes_cerberus_own_schema_check(part: str) -> None:
    checked = DefinitionSchema(_Validator(), part_schema(part))  # SchemaError when invalid
    assert sorted(checked) == sorted(_PARTS[part])  # every section of the part was checked


def test_the_check_would_catch_a_broken_schema() -> None:
    broken = {**part_schema("strategy")}
    broken["strategy"] = {**broken["strategy"], "type": "no-such-type"}
    with pytest.raises(SchemaError):
        DefinitionSchema(_Validator(), broken)
