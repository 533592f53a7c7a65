"""The types a stored event's fields must have, checked when it is decoded.

An event's values come from msgpack as whatever the writer put there. The fold, the projector
and the executors take an event's fields to be what its class declares: a ``cidr`` that is
``True`` instead of a string made the service's fold raise, and every start of the service
fold the log into the same exception (found Dec 5). So :func:`field_error` checks each field
against its annotation — ``str``, ``int``, ``bool``, ``float`` (an int is taken: msgpack keeps
``600`` an int), either of them or ``None``, and lists or maps of them — and a message whose
fields do not fit is undecodable like any other malformed message: recorded and skipped.

It is on every reader's hot path, so a class's check is one boolean expression over its
fields, compiled once (:func:`build_check`); only when it fails is the first offending field
looked for, to name it.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

#: a check of one event's attributes (its ``__dict__``): None, or what is wrong
Check = Callable[[dict[str, Any]], str | None]

_NONE = type(None)
_SCALAR_TYPES: dict[Any, frozenset[type]] = {
    str: frozenset({str}),
    int: frozenset({int}),  # bool is not int here: type(True) is bool
    bool: frozenset({bool}),
    float: frozenset({float, int}),
}
_SEQUENCES = (list, tuple)
#: an int must fit 64 bits, signed (what SQLite stores and binds): msgpack also reads unsigned
#: 64-bit values, and one above 2**63 - 1 in a column failed the projector's commit for good
#: (the same message again on every restart) instead of being recorded and skipped
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def _fits(v: Any) -> bool:
    """Not an int, or an int of 64 bits."""
    return type(v) is not int or INT_MIN <= v <= INT_MAX


def _scalar(hint: Any) -> frozenset[type] | None:
    """The types a scalar annotation allows (``X``, ``X | None``), or None if it is not one."""
    if hint in _SCALAR_TYPES:
        return _SCALAR_TYPES[hint]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        allowed: set[type] = set()
        for arg in typing.get_args(hint):
            if arg is _NONE:
                allowed.add(_NONE)
            elif arg in _SCALAR_TYPES:
                allowed |= _SCALAR_TYPES[arg]
            else:
                return None
        return frozenset(allowed)
    return None


def _value_check(hint: Any) -> Callable[[Any], bool] | None:
    """A predicate for a value of annotation ``hint``; None for ``Any`` (anything goes)."""
    if hint is Any:
        return None
    allowed = _scalar(hint)
    if allowed is not None:
        if int in allowed:
            return lambda v: type(v) in allowed and _fits(v)
        return lambda v: type(v) in allowed
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, tuple) and args:
        item = _value_check(args[0])
        if item is None:
            return lambda v: type(v) in _SEQUENCES
        return lambda v: type(v) in _SEQUENCES and all(map(item, v))
    if origin is dict and len(args) == 2:
        key, value = _value_check(args[0]), _value_check(args[1])
        if key is None or value is None:
            keys_only = key or (lambda k: True)
            return lambda v: type(v) is dict and all(map(keys_only, v))
        return lambda v: type(v) is dict and all(key(k) and value(x) for k, x in v.items())
    raise TypeError(f"no check for a field annotated {hint!r}")


def _describe(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _term(key: str, hint: Any, env: dict[str, Any]) -> str | None:
    """The expression checking ``d[key]`` (a name of ``env`` for what it needs), or None."""
    allowed = _scalar(hint)
    if allowed is not None:
        nullable = _NONE in allowed
        plain = sorted(allowed - {_NONE}, key=lambda t: t.__name__)
        if len(plain) == 1:
            env[plain[0].__name__] = plain[0]
            test = f"type({{v}}) is {plain[0].__name__}"
        else:
            name = f"_types{len(env)}"
            env[name] = frozenset(plain)
            test = f"type({{v}}) in {name}"
        if int in plain:  # and within 64 bits (INT_MIN, INT_MAX)
            env["_lo"], env["_hi"] = INT_MIN, INT_MAX
            ranged = (
                "_lo <= {v} <= _hi"
                if len(plain) == 1
                else "(type({v}) is not int or _lo <= {v} <= _hi)"
            )
            env["int"] = int
            test = f"({test} and {ranged})"
        if nullable:
            return "((v := d[{k}]) is None or {t})".format(k=repr(key), t=test.format(v="v"))
        if int in plain:  # read once: the first use assigns it
            return test.replace("{v}", f"(v := d[{key!r}])", 1).format(v="v")
        return test.format(v=f"d[{key!r}]")
    pred = _value_check(hint)
    if pred is None:
        return None
    name = f"_pred{len(env)}"
    env[name] = pred
    return f"{name}(d[{key!r}])"


def _deep_fits(v: Any) -> bool:
    """Every int in ``v`` (a value, or a list or map of them) fits 64 bits."""
    if type(v) in _SEQUENCES:
        return all(map(_deep_fits, v))
    if type(v) is dict:
        return all(_deep_fits(k) and _deep_fits(x) for k, x in v.items())
    return _fits(v)


#: (module, annotation text) -> the type it names: the event classes' annotations are text
#: (``from __future__ import annotations``) and share a few dozen spellings; evaluating each
#: once instead of every field of every class (``typing.get_type_hints``: ~350 compiles and
#: evals) took a decoder's build from ~18 to ~5 ms — a fixed cost of every reader's start
_HINTS: dict[tuple[str, str], Any] = {}


def field_hints(cls: type, names: Iterable[str] | None = None) -> dict[str, Any]:
    """``typing.get_type_hints(cls)`` (of the fields ``names``; None: every annotation), each
    annotation text evaluated once per module (what ``get_type_hints`` does for a dataclass of
    this code; it is the fallback for anything else: tests/events/test_codec_fast_path.py
    compares the two for every event type)."""
    raw: dict[str, tuple[str, Any]] = {}
    for klass in reversed(cls.__mro__):
        module = vars(sys.modules.get(klass.__module__, types.ModuleType("?")))
        for name, hint in vars(klass).get("__annotations__", {}).items():
            raw[name] = (klass.__module__, hint) if isinstance(hint, str) else ("", hint)
            if isinstance(hint, str) and (klass.__module__, hint) not in _HINTS:
                try:
                    _HINTS[(klass.__module__, hint)] = eval(hint, module)
                except Exception:
                    return typing.get_type_hints(cls)
    out = {}
    for name in raw if names is None else names:
        module_name, hint = raw[name]
        out[name] = _HINTS[(module_name, hint)] if module_name else hint
    return out


def build_check(cls: type) -> Check:
    """The check of ``cls``'s fields (a dataclass). The fast part is one boolean expression
    over the fields, compiled once per class (as :mod:`dataclasses` builds ``__init__``): 7
    fields in ~0.2 us, against ~0.7 with a loop or grouped checks. The names in it are the
    class's field names (identifiers) and the types of :data:`_SCALAR_TYPES`."""
    hints = field_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    env: dict[str, Any] = {}
    terms = [t for n in fields if (t := _term(n, hints[n], env)) is not None]
    source = "lambda d: " + (" and ".join(terms) if terms else "True")
    namespace = {"__builtins__": {}, "type": type, **env}
    fast: Callable[[dict[str, Any]], bool] = eval(source, namespace)
    described = {n: _describe(hints[n]) for n in fields}
    every = [(n, _value_check(hints[n])) for n in fields]

    def name_it(d: dict[str, Any]) -> str:
        for n, pred in every:
            if pred is not None and not pred(d[n]):
                if not _deep_fits(d[n]):
                    return f"{n} holds an int beyond 64 bits"
                return f"{n} is {type(d[n]).__name__}, not {described[n]}"
        return "a field has a value of the wrong type"  # pragma: no cover (both checks agree)

    def check(d: dict[str, Any]) -> str | None:
        try:
            if fast(d):
                return None
        except KeyError as exc:  # a class that builds itself without every field
            return f"{exc.args[0]} is missing"
        return name_it(d)

    return check


CHECKS: dict[type, Check] = {}


def check_of(cls: type) -> Check:
    """The check of ``cls``'s fields, built once (decode's hot path reads ``CHECKS`` itself)."""
    check = CHECKS.get(cls)
    if check is None:
        check = CHECKS[cls] = build_check(cls)
    return check


def field_error(event: object) -> str | None:
    """None if every field of ``event`` has a value of its declared type, else what is wrong
    (naming the field)."""
    attrs = getattr(event, "__dict__", None)
    if attrs is None:  # pragma: no cover (no event class has slots today)
        attrs = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}  # type: ignore[arg-type]
    return check_of(type(event))(attrs)
