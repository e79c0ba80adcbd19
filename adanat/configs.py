"""Config dataclasses in and out of JSON, and command-line flags made from their fields.

:func:`from_dict` rebuilds a (nested) config dataclass from its saved JSON form by reading the
type hints of its fields (``Path``, ``X | None``, ``tuple[X, ...]``, ``tuple[X, Y]``, nested
dataclasses, ``Literal``, ``str``/``int``/``float``/``bool``); an unknown key, a missing key of a
field without a default, or a value of the wrong type is a :class:`ValueError` that names the key
path. :func:`to_dict` is its inverse (``Path`` to ``str``, tuples to lists).

:func:`add_flags` adds argparse options for chosen fields of a dataclass: the default is the
field's (one source per default), the help text is the ``:param name:`` line of the class
docstring, and ``Literal`` fields get their choices. A flag may instead leave its default to be
resolved after parsing (``default=None`` with a ``default_help`` text), as the per-world defaults
of ``adanat train`` are.

Why a small helper of our own rather than ``tyro`` (what CleanRL uses): the ``adanat`` commands
share argparse parent parsers (``parents=``: device, model preset and weights flags) and one
error convention (one line on stderr, exit code 2), which tyro's own parser and its multi-line
error panels do not fit; several flags keep short or old names (``--env`` beside ``--world``,
``-T``, ``--lr``, ``--disc-updates`` for a field two dataclasses down); some defaults depend on
the world and are resolved after parsing, where tyro wants one concrete default per field; and
it would be one more dependency for about a hundred lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

T = TypeVar("T")

__all__ = ["FIELD", "Flag", "FlagSet", "add_flags", "field_help", "from_dict", "to_dict"]


# -- JSON form -----------------------------------------------------------------------


def to_dict(obj: Any) -> Any:
    """The JSON form of a config dataclass (recursively): paths as strings, tuples as lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    return obj


@cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of ``cls``'s fields; a field whose hint names a type that is
    imported for type checking only is left out (and fails only where it is used)."""
    try:
        return typing.get_type_hints(cls)
    except NameError:
        namespace = vars(sys.modules[cls.__module__])
        out = {}
        for f in dataclasses.fields(cls):
            try:
                out[f.name] = eval(f.type, namespace) if isinstance(f.type, str) else f.type
            except NameError:
                continue
        return out


def from_dict(cls: type[T], data: Any) -> T:
    """Rebuild dataclass ``cls`` from ``data`` (its :func:`to_dict` form), checking every value
    against the field's type hint. Keys of fields with a default may be missing (older files).

    :raises ValueError: an unknown or missing key, or a value of the wrong type (the message
        names the key path, e.g. ``env.reward_options.discriminator.betas[1]``).
    """
    return _dataclass(cls, data, cls.__name__)


def _dataclass(cls: type[T], data: Any, where: str) -> T:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected an object of {cls.__name__} settings, got {_show(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} for {cls.__name__}")
    missing = [
        name
        for name, f in fields.items()
        if name not in data and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(map(repr, missing))} of {cls.__name__}")
    hints = _hints(cls)
    values = {name: _value(hints[name], data[name], f"{where}.{name}") for name in fields if name in data}
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:  # the class's own checks (__post_init__)
        raise ValueError(f"{where}: {e}") from None


def _value(hint: Any, value: Any, where: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ValueError(f"{where}: expected {_name(hint)}, got null")
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _value(arg, value, where)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(
            errors[0] if len(errors) == 1 else f"{where}: expected {_name(hint)}, got {_show(value)}"
        )
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise ValueError(f"{where}: expected one of {', '.join(map(repr, args))}, got {_show(value)}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list, got {_show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{where}: expected a list of {len(args)} values, got {_show(value)}")
        return tuple(_value(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list, got {_show(value)}")
        return [_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ValueError(f"{where}: expected an object, got {_show(value)}")
        return {k: _value(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return _dataclass(hint, value, where)  # type: ignore[arg-type]
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is Path:
        if isinstance(value, str | Path):
            return Path(value)
    else:
        raise TypeError(f"{where}: from_dict does not know the type {_name(hint)}")
    raise ValueError(f"{where}: expected {_name(hint)}, got {_show(value)}")


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _show(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


# -- flags -----------------------------------------------------------------------------


FIELD: Any = object()  # "the field's own default"


@dataclass(frozen=True)
class Flag:
    """One command-line option for one field of a config dataclass.

    :param field: the field's name.
    :param names: option strings (default ``--field-name``).
    :param type: parses the text (default: from the field's type hint).
    :param default: :data:`FIELD` (the field's default), or a value such as None for a default
        resolved after parsing (say which in ``default_help``).
    :param default_help: the default as the help shows it, when it is not the field's.
    :param choices: allowed values (default: a ``Literal`` field's).
    :param help: help text instead of the docstring's ``:param`` line.
    :param metavar: argparse ``metavar`` (default: the long option's name).

    The parsed value lands in the namespace attribute named after the field.
    """

    field: str
    names: tuple[str, ...] = ()
    type: Callable[[str], Any] | None = None
    default: Any = FIELD
    default_help: str | None = None
    choices: Sequence[Any] | None = None
    help: str | None = None
    metavar: str | None = None


@dataclass(frozen=True)
class FlagSet:
    """The flags :func:`add_flags` added for one dataclass; :meth:`values` reads them back."""

    cls: type
    fields: tuple[str, ...]  # also the namespace attributes

    def values(self, args: argparse.Namespace, skip_none: bool = True) -> dict[str, Any]:
        """``{field: parsed value}``; with ``skip_none``, flags left at None (defaults that are
        resolved later) are left out."""
        out = {f: getattr(args, f) for f in self.fields}
        return {f: v for f, v in out.items() if not (skip_none and v is None)}


def field_help(cls: type, name: str) -> str:
    """The ``:param name:`` text of ``cls``'s docstring (continuation lines joined), or ``""``."""
    return _docstring_params(cls).get(name, "")


@cache
def _docstring_params(cls: type) -> dict[str, str]:
    doc = inspect.getdoc(cls) or ""
    out: dict[str, str] = {}
    current: str | None = None
    for line in doc.splitlines():
        m = re.match(r"\s*:param (\w+):\s*(.*)", line)
        if m:
            current = m.group(1)
            out[current] = m.group(2).strip()
        elif current is not None and line.startswith((" ", "\t")) and line.strip():
            out[current] += " " + line.strip()
        else:
            current = None
    return {k: _plain(" ".join(v.split())) for k, v in out.items()}


def _plain(text: str) -> str:
    """Docstring markup as plain text: ``x`` -> x, :class:`~a.b.C` -> C, :mod:`a.b` -> a.b."""
    text = re.sub(r":\w+:`~[\w.]*?(\w+)`", r"\1", text)
    text = re.sub(r":\w+:`([^`]+)`", r"\1", text)
    return text.replace("``", "")


def _parser_of(hint: Any) -> tuple[Callable[[str], Any] | None, Sequence[Any] | None]:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _parser_of(rest[0])
        return None, None
    if origin is Literal:
        return type(args[0]), args
    if hint in (int, float, str, Path):
        return hint, None
    return None, None


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise ValueError(f"field {f.name} has no default; give the flag one")


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, flags: Iterable[Flag | str]
) -> FlagSet:
    """Add options for ``flags`` (a :class:`Flag` or a field name) of dataclass ``cls`` to
    ``parser``: defaults from the fields, help from the class docstring, choices from ``Literal``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    added: list[str] = []
    for flag in flags:
        flag = Flag(flag) if isinstance(flag, str) else flag
        if flag.field not in fields:
            raise ValueError(f"{cls.__name__} has no field {flag.field!r}")
        f = fields[flag.field]
        hint = hints[flag.field]
        parse, choices = _parser_of(hint)
        parse, choices = flag.type or parse, flag.choices if flag.choices is not None else choices
        default = _field_default(f) if flag.default is FIELD else flag.default
        text = flag.help if flag.help is not None else field_help(cls, flag.field)
        shown = flag.default_help if flag.default_help is not None else _show_default(default)
        if shown:
            text = f"{text} (default: {shown})" if text else f"default: {shown}"
        names = flag.names or (f"--{flag.field.replace('_', '-')}",)
        kwargs: dict[str, Any] = {"dest": flag.field, "default": default, "help": text.replace("%", "%%")}
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            if parse is None:
                raise ValueError(f"{cls.__name__}.{flag.field}: give the flag a type (hint {_name(hint)})")
            kwargs["type"] = parse
            if choices is not None:
                kwargs["choices"] = list(choices)
            if flag.metavar or choices is None:
                long = next((n for n in names if n.startswith("--")), names[0])
                kwargs["metavar"] = flag.metavar or long.lstrip("-").upper().replace("-", "_")
        parser.add_argument(*names, **kwargs)
        added.append(flag.field)
    return FlagSet(cls, tuple(added))


def _show_default(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
