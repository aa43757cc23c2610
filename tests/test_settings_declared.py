"""The manager's settings are declared once (ManagerConfig); every layer agrees with it.

Each derived layer is read the way a user meets it: the SIDECAR_* variable, the `serve` flag's
help, the PATCH body and its OpenAPI schema, the README table. For each declared bound, a
value just outside it is refused by every layer and a value on it is taken.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Any, get_args

import pytest
from flask.testing import FlaskClient
from pydantic import ValidationError

from sidecar.cli import build_parser
from sidecar.core.config import MANAGER_SETTINGS, ManagerConfig, SettingSpec, bounds_of
from sidecar.settings import Settings, describe_errors, env_name, flag_name
from sidecar.web.openapi import build_openapi
from sidecar.web.schemas import ConfigPatch

README = Path(__file__).resolve().parents[1] / "README.md"
NAMES = [spec.name for spec in MANAGER_SETTINGS]
_OPENAPI_BOUNDS = {
    "ge": "minimum",
    "gt": "exclusiveMinimum",
    "le": "maximum",
    "lt": "exclusiveMaximum",
}


def bounds_in(annotation: Any) -> dict[str, float]:
    """The ge/gt/le/lt bounds carried by an Annotated type."""
    return {
        key: getattr(item, key)
        for item in getattr(annotation, "__metadata__", ())
        for key in _OPENAPI_BOUNDS
        if isinstance(getattr(item, key, None), int | float)
    }


def spec_of(name: str) -> SettingSpec:
    return next(spec for spec in MANAGER_SETTINGS if spec.name == name)


def test_the_declaration_is_the_nine_manager_settings_each_bounded_and_explained() -> None:
    assert NAMES == [
        "max_sessions", "cleanup_interval_seconds", "session_max_age_seconds",
        "failed_max_age_seconds", "completed_max_age_seconds", "stuck_after_seconds",
        "capacity_policy", "warning_utilization", "critical_utilization",
    ]  # fmt: skip
    for spec in MANAGER_SETTINGS:
        assert spec.help, spec.name
        assert spec.live, spec.name
        # a number has a lower and an upper bound; a choice has its choices
        if spec.choices:
            assert spec.bounds == {}
        else:
            assert set(spec.bounds) & {"ge", "gt"}, spec.name
            assert "le" in spec.bounds, spec.name


@pytest.mark.parametrize("name", NAMES)
def test_the_environment_setting_has_the_declared_type_default_bounds_and_help(name: str) -> None:
    spec, field = spec_of(name), Settings.model_fields[name]

    assert field.default == spec.default
    assert field.description == spec.help
    assert bounds_of(field) == spec.bounds
    assert getattr(Settings(), name) == spec.default


@pytest.mark.parametrize("name", NAMES)
def test_the_serve_flag_shows_the_declared_help_bounds_and_default(name: str) -> None:
    spec = spec_of(name)
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve = sub.choices["serve"]
    (action,) = [a for a in serve._actions if flag_name(name) in a.option_strings]
    help_text = action.help or ""

    assert spec.help in help_text
    assert f"Allowed: {', '.join(spec.choices) or spec.describe()}." in help_text
    assert f"[{env_name(name)}, default " in help_text


@pytest.mark.parametrize("name", NAMES)
def test_the_patch_body_takes_each_live_setting_with_the_declared_bounds(name: str) -> None:
    spec, field = spec_of(name), ConfigPatch.model_fields[name]
    # optional in the body: the declared type (and its bounds) is one branch of `... | None`
    (declared,) = [arg for arg in get_args(field.annotation) if arg is not type(None)]

    assert spec.live
    assert bounds_in(declared) == spec.bounds
    assert field.description == spec.help


def test_the_patch_body_has_no_field_the_declaration_lacks() -> None:
    assert set(ConfigPatch.model_fields) == {spec.name for spec in MANAGER_SETTINGS if spec.live}


@pytest.mark.parametrize("name", NAMES)
def test_the_openapi_document_shows_the_declared_bounds_and_default(name: str) -> None:
    spec = spec_of(name)
    schemas = build_openapi()["components"]["schemas"]
    patch = schemas["ConfigPatch"]["properties"][name]
    answer = schemas["ManagerConfig"]["properties"][name]

    for prop in (patch, answer):
        shown = {key: prop[word] for key, word in _OPENAPI_BOUNDS.items() if word in prop}
        assert shown == spec.bounds
        assert prop["description"] == spec.help
    assert answer["default"] == (getattr(spec.default, "value", spec.default))
    if spec.choices:
        assert list(schemas[spec.type.__name__]["enum"]) == list(spec.choices)


@pytest.mark.parametrize("name", NAMES)
def test_the_readme_table_shows_the_declared_default_and_bounds(name: str) -> None:
    spec = spec_of(name)
    rows = [line for line in README.read_text().splitlines() if f"`{env_name(name)}`" in line]
    assert len(rows) == 1, f"{env_name(name)} needs exactly one row in the README table"
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    default = getattr(spec.default, "value", spec.default)
    if isinstance(default, float) and default.is_integer():
        default = int(default)

    assert cells[1] == f"`{flag_name(name)}`"
    assert cells[2] == f"`{default}`"
    allowed = " or ".join(f"`{c}`" for c in spec.choices) if spec.choices else spec.describe()
    assert cells[3].startswith(allowed), cells[3]
    assert cells[3].endswith("live") == spec.live


def _outside(spec: SettingSpec) -> list[float]:
    """A value just past each bound."""
    values: list[float] = []
    step = 1 if spec.type is int else 1e-9
    if "ge" in spec.bounds:
        values.append(spec.bounds["ge"] - step)
    if "gt" in spec.bounds:
        values.append(spec.bounds["gt"])
    if "le" in spec.bounds:
        values.append(spec.bounds["le"] + step * max(1.0, spec.bounds["le"]))
    return values


_NUMBERS = [spec for spec in MANAGER_SETTINGS if not spec.choices]
_PAST = [(spec.name, value) for spec in _NUMBERS for value in _outside(spec)]
_PAST += [(spec.name, math.nan) for spec in _NUMBERS if spec.type is float]
_ON = [
    (spec.name, bound)
    for spec in _NUMBERS
    for key, bound in spec.bounds.items()
    if key in ("ge", "le") and not spec.name.endswith("_utilization")  # paired thresholds
]


@pytest.mark.parametrize(("name", "value"), _PAST)
def test_a_value_past_a_bound_is_refused_by_every_layer(
    name: str, value: float, clean_env: pytest.MonkeyPatch, admin_client: FlaskClient
) -> None:
    with pytest.raises(ValidationError):
        ManagerConfig(**{name: value})
    with pytest.raises(ValidationError) as caught:
        Settings(**{name: value})
    assert describe_errors(caught.value).startswith(f"invalid {env_name(name)}=")
    clean_env.setenv(env_name(name), repr(value))
    with pytest.raises(ValidationError):
        Settings()
    with pytest.raises(ValidationError):
        ConfigPatch.model_validate({name: value})
    if not math.isnan(value):  # NaN is not JSON; a body holding it is malformed (400)
        before = admin_client.get("/api/v1/admin/config").get_json()
        answer = admin_client.patch("/api/v1/admin/config", json={name: value})
        assert answer.status_code == 422, answer.get_json()
        assert answer.get_json()["errors"][0]["loc"] == ["body", name]
        assert admin_client.get("/api/v1/admin/config").get_json() == before


@pytest.mark.parametrize(("name", "value"), _ON)
def test_a_value_on_a_bound_is_taken_by_every_layer(
    name: str, value: float, clean_env: pytest.MonkeyPatch, admin_client: FlaskClient
) -> None:
    assert getattr(ManagerConfig(**{name: value}), name) == value
    assert getattr(Settings(**{name: value}), name) == value
    clean_env.setenv(env_name(name), str(value))
    assert getattr(Settings().manager_config, name) == value
    answer = admin_client.patch("/api/v1/admin/config", json={name: value})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()[name] == value


@pytest.fixture
def admin_client(make_app: Any) -> FlaskClient:
    """An app on its own manager with the default settings."""
    client: FlaskClient = make_app().test_client()
    return client


def test_the_readme_names_no_bound_the_declaration_lacks() -> None:
    # The old "> 0" wording of the intervals and ages is gone with their new minima.
    table = [line for line in README.read_text().splitlines() if line.startswith("| `SIDECAR_")]
    manager_rows = [row for row in table if any(f"`{env_name(n)}`" in row for n in NAMES)]
    assert len(manager_rows) == len(NAMES)
    assert not [row for row in manager_rows if re.search(r"\| > 0;", row)]
