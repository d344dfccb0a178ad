"""The settings reference of the documentation site (docs/reference/settings.md), rendered
from the `Settings` class itself at every build (docs/hooks/settings_reference.py), so the
page cannot drift from the code: a setting added, renamed or given another default shows
there as it is."""

import json
import types
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import annotated_types
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import NoDecode

from shared.runtime.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]

_SCALARS: dict[type, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    Path: "path",
}


def env_name(field: str) -> str:
    """The environment variable a field is read from: pydantic-settings' prefix plus the
    field's name, upper-cased (matching is case-insensitive, upper case is the convention)."""
    prefix = Settings.model_config.get("env_prefix", "")
    return f"{prefix}{field}".upper()


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _type_of(annotation: Any) -> str:
    """A reader's name for a field's type: how the variable's text is read."""
    comma_separated = False
    if get_origin(annotation) is Annotated:
        base, *extras = get_args(annotation)
        comma_separated = any(isinstance(e, NoDecode) or e is NoDecode for e in extras)
        annotation = base
    annotation, optional = _strip_optional(annotation)
    origin = get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        text = "one of " + ", ".join(f"`{member.value}`" for member in annotation)
    elif origin is list:
        text = "comma-separated list" if comma_separated else "JSON list"
    elif origin is dict:
        text = "JSON object"
    elif isinstance(annotation, type) and annotation in _SCALARS:
        text = _SCALARS[annotation]
    else:
        text = getattr(annotation, "__name__", str(annotation))
    return f"{text}, optional" if optional else text


def _bounds(info: FieldInfo) -> str:
    """The field's numeric bounds, as pydantic enforces them at start-up."""
    marks = []
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            marks.append(f"≥ {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            marks.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            marks.append(f"≤ {item.le}")
        elif isinstance(item, annotated_types.Lt):
            marks.append(f"< {item.lt}")
    return ", ".join(marks)


def _default_of(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value: Any = info.get_default(call_default_factory=True, validated_data={})
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None:
        return "unset"
    if isinstance(value, Enum):
        return f"`{value.value}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str | Path):
        path = Path(value)
        # A default computed from where crewq is installed names the repository, not the
        # machine the page was built on.
        if path.is_absolute() and path.is_relative_to(REPO_ROOT):
            return f"the repository's `{path.relative_to(REPO_ROOT).as_posix()}/`"
        return f"`{value}`"
    if isinstance(value, list) and not value and _is_comma_separated(info):
        return "none"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def _is_comma_separated(info: FieldInfo) -> bool:
    return any(item is NoDecode or isinstance(item, NoDecode) for item in info.metadata)


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def render() -> str:
    """Every setting as one row of a Markdown table, in the class's order."""
    rows = [
        "| variable | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, info in Settings.model_fields.items():
        kind = _type_of(info.annotation if not info.metadata else _annotated(info))
        bounds = _bounds(info)
        if bounds:
            kind = f"{kind} ({bounds})"
        rows.append(
            f"| `{env_name(name)}` | {_cell(kind)} | {_cell(_default_of(info))} "
            f"| {_cell(info.description or '')} |"
        )
    return "\n".join(rows) + "\n"


def _annotated(info: FieldInfo) -> Any:
    # pydantic moves `Annotated` extras (NoDecode among them) into `metadata`; put them back
    # so the type says whether the variable is comma-separated.
    return Annotated[(info.annotation, *info.metadata)]
