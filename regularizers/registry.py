"""The registry of regularizers: ``register``, ``get``, ``build``, ``available``.

Third-party packages add regularizers without touching regbench by declaring an entry point
in the group ``regbench.regularizers`` that points at a module (importing it runs its
``@register`` decorators) or at a ``Regularizer`` subclass::

    [project.entry-points."regbench.regularizers"]
    my_reg = "my_package.my_reg"
"""

from __future__ import annotations

import difflib
from importlib import metadata
from typing import Any, Callable, TypeVar

from .base import CELL_TYPES, Regularizer

ENTRY_POINT_GROUP = "regbench.regularizers"

_REGISTRY: dict[str, type[Regularizer]] = {}
_entry_points_loaded = False

R = TypeVar("R", bound=type[Regularizer])


class UnknownRegularizerError(ValueError):
    """Raised for a name that no registered regularizer has; the message lists the valid ones."""


def register(name: str) -> Callable[[R], R]:
    """Class decorator that registers a ``Regularizer`` subclass under ``name``."""
    if not name or not name.replace("_", "").isalnum() or not name[0].isalpha():
        raise ValueError(f"regularizer name {name!r} must be a letter followed by letters, digits or '_'")

    def decorate(cls: R) -> R:
        if not (isinstance(cls, type) and issubclass(cls, Regularizer)):
            raise TypeError(f"@register({name!r}) must decorate a subclass of regularizers.Regularizer")
        existing = _REGISTRY.get(name)
        if existing is not None and (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"a regularizer named {name!r} is already registered ({existing.__module__}."
                             f"{existing.__qualname__}); choose another name")
        bad = sorted(set(cls.cell_types) - set(CELL_TYPES))
        if bad:
            raise ValueError(f"{name}: unknown cell type(s) {bad}; valid: {', '.join(CELL_TYPES)}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry_point.load()
        except Exception as error:  # a broken plugin must not break regbench itself
            import warnings

            warnings.warn(f"regbench: could not load regularizer plugin {entry_point.name!r} "
                          f"({entry_point.value}): {error}", stacklevel=2)
            continue
        if isinstance(loaded, type) and issubclass(loaded, Regularizer) and loaded not in _REGISTRY.values():
            register(entry_point.name)(loaded)


def reload_plugins() -> None:
    """Look at the installed entry points again (after installing a plugin in this process)."""
    global _entry_points_loaded
    _entry_points_loaded = False
    _load_entry_points()


def available() -> list[str]:
    """Names of all registered regularizers, built-in and plugins, sorted."""
    _load_entry_points()
    return sorted(_REGISTRY)


def get(name: str) -> type[Regularizer]:
    """The regularizer class registered under ``name``."""
    _load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        names = sorted(_REGISTRY)
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownRegularizerError(
            f"unknown regularizer {name!r}.{hint} Available: {', '.join(names)}") from None


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``"zoneout:z_cells=0.5,z_states=0.05"`` into a name and raw (text) parameters."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a regularizer spec must be a non-empty string like 'zoneout:z_cells=0.5', got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    params: dict[str, str] = {}
    if rest.strip():
        for item in rest.split(","):
            key, sep, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not key or not value:
                raise ValueError(f"malformed regularizer spec {spec!r}: {item.strip()!r} is not 'name=value'. "
                                 "Expected 'name' or 'name:param=value,param=value'")
            if key in params:
                raise ValueError(f"malformed regularizer spec {spec!r}: {key!r} is given twice")
            params[key] = value
    elif _:
        raise ValueError(f"malformed regularizer spec {spec!r}: nothing after ':'. "
                         "Expected 'name' or 'name:param=value,param=value'")
    return name.strip(), params


def build(spec: str | Regularizer, **params: Any) -> Regularizer:
    """Make a regularizer from a name or spec string, with ``params`` overriding the spec's values."""
    if isinstance(spec, Regularizer):
        if params:
            raise ValueError("build() takes parameters only with a name or spec string, not an instance")
        return spec
    name, raw = parse_spec(spec)
    cls = get(name)
    parsed: dict[str, Any] = {}
    for key, text in raw.items():
        if key not in cls.hyperparameters:
            valid = ", ".join(cls.hyperparameters) or "none"
            raise ValueError(f"{name}: unknown hyperparameter {key!r} in spec {spec!r}; valid: {valid}")
        parsed[key] = cls.hyperparameters[key].parse(key, text)
    parsed.update(params)
    return cls(**parsed)
