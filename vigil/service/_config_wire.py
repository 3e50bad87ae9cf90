"""The ``[limits]`` and ``[tracing]`` sections of the ``vigil serve`` configuration, read and
validated with the loader's tables (:mod:`._config`); docs/SERVICE.md lists every key."""

from __future__ import annotations

import importlib.util
import re
from typing import TYPE_CHECKING, Any

from vigil import _diagnostics as D
from vigil.service._limits import MAX_CLASSES, MAX_PREFIX, LimitClass, LimitsSection
from vigil.service._tracing import EXPORTERS, TracingSection

if TYPE_CHECKING:
    from vigil.service._config import _Table

LIMITS_KEYS = ("default", "class_header", "classes")
CLASS_KEYS = ("rate", "burst", "trace_prefixes")
TRACING_KEYS = ("enabled", "exporter", "endpoint", "service_name")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PREFIX = re.compile(rf"[0-9a-f]{{1,{MAX_PREFIX}}}")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")  # an HTTP header name (RFC 9110)
MAX_BURST = 1_000_000


def limits(t: _Table | None) -> LimitsSection:
    """``[limits]``: absent -> no limiting.

    Raises:
        ServiceConfigError: DIA-7204..7207 for a key unknown, mistyped, out of range or
            missing; DIA-7220 for a default class not declared, a class name or trace-id
            prefix of the wrong form, a prefix two classes share, more than 64 classes.
    """
    if t is None:
        return LimitsSection()
    d = LimitsSection()
    header = t.text("class_header", d.class_header)
    if not _TOKEN.fullmatch(header):
        raise t.error("class_header", f"{header!r} is not an HTTP header name", D.LIMITS_INVALID)
    if not t.has("classes"):
        raise t.error("classes", "required table is missing", D.SERVICE_CONFIG_REQUIRED)
    # any class name is a key here: each class is read with its own keys (_class)
    table = type(t)(t.ctx, {}, "limits.classes", ())
    table.data = t.raw_table("classes")
    if not table.data or len(table.data) > MAX_CLASSES:
        raise t.error(
            "classes", f"1..{MAX_CLASSES} classes, got {len(table.data)}", D.LIMITS_INVALID
        )
    classes = [_class(table, name) for name in table.data]
    owner: dict[str, str] = {}
    for c in classes:
        for prefix in c.trace_prefixes:
            if prefix in owner:
                raise table.error(
                    f"{c.name}.trace_prefixes",
                    f"prefix {prefix!r} is also class {owner[prefix]!r}'s",
                    D.LIMITS_INVALID,
                )
            owner[prefix] = c.name
    default = t.text("default", d.default)
    if default not in table.data:
        raise t.error(
            "default",
            f"{default!r} is not one of the classes ({', '.join(sorted(table.data))})",
            D.LIMITS_INVALID,
        )
    return LimitsSection(classes=tuple(classes), default=default, class_header=header)


def _class(classes: _Table, name: str) -> LimitClass:
    if not _NAME.fullmatch(name):
        raise classes.error(name, "a class name is 1..64 of A-Z a-z 0-9 _ . -", D.LIMITS_INVALID)
    t = type(classes)(classes.ctx, classes.raw_table(name), f"{classes.name}.{name}", CLASS_KEYS)
    assert t is not None
    prefixes: Any = t._get("trace_prefixes", [])
    ok = isinstance(prefixes, list) and all(isinstance(p, str) for p in prefixes)
    t._type("trace_prefixes", prefixes, ok, "a list of strings")
    for p in prefixes:
        if not _PREFIX.fullmatch(p):
            raise t.error(
                "trace_prefixes",
                f"{p!r}: a trace-id prefix is 1..{MAX_PREFIX} lower-case hex digits",
                D.LIMITS_INVALID,
            )
    return LimitClass(
        name=name,
        rate=t.number("rate"),
        burst=t.integer("burst", maximum=MAX_BURST),
        trace_prefixes=tuple(dict.fromkeys(prefixes)),
    )


def tracing(t: _Table | None) -> TracingSection:
    """``[tracing]``: absent -> off.

    Raises:
        ServiceConfigError: DIA-7204..7206 for a key unknown, mistyped or out of range;
            DIA-7221 when tracing is enabled and opentelemetry-sdk is not installed.
    """
    if t is None:
        return TracingSection()
    d = TracingSection()
    section = TracingSection(
        enabled=t.flag("enabled", d.enabled),
        exporter=t.choice("exporter", EXPORTERS, d.exporter),
        endpoint=t.text("endpoint", None),
        service_name=t.text("service_name", d.service_name),
    )
    if section.enabled and not _installed("opentelemetry.sdk"):
        raise t.error(
            "enabled",
            "spans need opentelemetry-sdk, which is not installed: pip install 'vigil[otel]', "
            "or set enabled = false",
            D.TRACING_EXTRA_MISSING,
        )
    return section


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False
