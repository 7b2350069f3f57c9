"""The model registry: built-in models plus plugins discovered through entry points.

A model is a class (or factory) whose first parameter is ``data_config`` and whose other
parameters are typed keyword hyperparameters with defaults. Its hyperparameters are read from
that signature, so there is no per-model argparse code::

    @register_model("mlp")
    class MLP(nn.Module):
        def __init__(self, data_config: DataConfig, fc1: int = 1024, dropout: float = 0.5): ...

Third-party packages add models through the ``zoo.models`` entry-point group::

    [project.entry-points."zoo.models"]
    mynet = "mypkg.models:MyNet"

Plugins are discovered lazily, on the first lookup, and merged with the built-ins; they never
replace them. A plugin that fails to import is reported once and every other model still works.
A plugin offering a built-in's name is reported and ignored; two plugins offering one name make
that name an error naming both, until one is uninstalled.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pydantic
from torch import nn

from zoo import providers as model_providers
from zoo.docstrings import argument_help, split_docstring
from zoo.errors import ZooError, did_you_mean

ENTRY_POINT_GROUP = "zoo.models"
BUILTIN_MODELS = "zoo.models"  # the package whose modules register the built-in models
BUILTIN = "built-in"


@dataclass(frozen=True)
class Hyperparameter:
    """One keyword argument of a model's constructor."""

    name: str
    annotation: Any
    default: Any
    help: str = ""  # from the ``Args:`` section of the model's docstring

    @property
    def type_name(self) -> str:
        """The annotation as a person would write it (``int``, ``list[int]``, ``int >= 1``)."""
        return _type_name(self.annotation)


_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _type_name(annotation: Any) -> str:
    """``int``, ``tuple[int >= 1, ...]``: declared ranges (``Annotated[int, Field(ge=1)]``) shown as bounds."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        bounds = [f"{sign} {getattr(m, key)}" for extra in args[1:] for m in getattr(extra, "metadata", [extra])
                  for key, sign in _BOUNDS.items() if hasattr(m, key)]
        return " ".join([_type_name(args[0]), ", ".join(bounds)]).strip()
    if isinstance(annotation, type) and not args:
        return annotation.__name__
    if origin in (typing.Union, types.UnionType):  # float | None, not UnionType[float, NoneType]
        return " | ".join("None" if a is type(None) else _type_name(a) for a in args)
    if isinstance(origin, type) and args:
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    return str(annotation).replace("typing.", "")


@dataclass
class ModelEntry:
    """What the registry knows about one model name."""

    name: str
    builder: Callable[..., nn.Module]
    source: str  # "built-in" or "package==version"
    hyperparameters: dict[str, Hyperparameter] = field(default_factory=dict)

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.builder.__doc__ or "")

    @property
    def summary(self) -> str:
        return self.doc.splitlines()[0] if self.doc else ""

    @property
    def description(self) -> str:
        """The docstring without its ``Args:`` section (which is each hyperparameter's ``help``)."""
        return split_docstring(self.doc)[0]


@dataclass(frozen=True)
class PluginError:
    """A plugin entry point that could not be used: it failed to import, or its name is taken."""

    entry_point: str
    package: str
    error: str  # what went wrong, e.g. "failed to load: ImportError: No module named 'x'"

    def __str__(self) -> str:
        return f"plugin '{self.entry_point}' from package {self.package} {self.error}"


_models: dict[str, ModelEntry] = {}
# Names offered by more than one plugin (and no built-in): looking them up is an error naming
# every provider, since neither can be preferred.
_conflicts: dict[str, list[str]] = {}
_plugin_errors: list[PluginError] = []
_provided: dict[str, ModelEntry] = {}
_plugins_discovered = False
# Set while an entry point is imported, so that @register_model inside a plugin module is
# attributed to its package rather than to the built-ins.
_loading_source: str | None = None


def _read_hyperparameters(builder: Callable[..., nn.Module]) -> dict[str, Hyperparameter]:
    target = builder.__init__ if inspect.isclass(builder) else builder
    signature = inspect.signature(target)
    try:
        hints = typing.get_type_hints(target, include_extras=True)  # keeps declared ranges (Annotated)
    except Exception:  # unresolvable annotations: fall back to the raw ones
        hints = {}
    params = [p for p in signature.parameters.values() if p.name != "self"]
    if not params or params[0].name != "data_config":
        raise TypeError(f"{builder!r}: a model's first parameter must be 'data_config'")
    found: dict[str, Hyperparameter] = {}
    helps = argument_help(builder)
    for param in params[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.default is inspect.Parameter.empty:
            raise TypeError(f"{builder!r}: hyperparameter '{param.name}' needs a default")
        annotation = hints.get(param.name, param.annotation)
        if annotation is inspect.Parameter.empty:
            annotation = type(param.default) if param.default is not None else Any
        found[param.name] = Hyperparameter(param.name, annotation, param.default, helps.get(param.name, ""))
    return found


def _report(error: PluginError) -> None:
    _plugin_errors.append(error)
    print(f"warning: {error}; every other model still works", file=sys.stderr)


def _add(name: str, builder: Callable[..., nn.Module], source: str) -> None:
    """Register ``builder`` as ``name`` from ``source``; built-ins always keep their names.

    A plugin offering a built-in's name is reported and ignored; two plugins offering one name
    make that name an error (naming both) until one is uninstalled; the same object reached twice
    (its module's decorator and its entry point) is one provider.
    """
    if name in _conflicts:
        _conflicts[name].append(source)
        providers = " and ".join(_conflicts[name])
        _report(PluginError(name, source, f"is ignored: model '{name}' is provided by {providers}; "
                                          "none of them is used until only one is installed"))
        return
    existing = _models.get(name)
    if existing is None:
        _models[name] = ModelEntry(name, builder, source, _read_hyperparameters(builder))
        return
    if existing.builder is builder:
        return
    if source == BUILTIN and existing.source == BUILTIN:
        if (builder.__module__, builder.__qualname__) == (existing.builder.__module__, existing.builder.__qualname__):
            # The same definition run again (a reloaded module, a re-run notebook cell): the newest wins.
            _models[name] = ModelEntry(name, builder, source, _read_hyperparameters(builder))
            return
        raise ValueError(
            f"model '{name}' is registered twice: by {existing.builder.__module__}.{existing.builder.__qualname__} "
            f"and by {builder.__module__}.{builder.__qualname__}; give one of them another name"
        )
    if existing.source == BUILTIN:
        _report(PluginError(name, source, f"is ignored: model '{name}' is provided by both {BUILTIN} and "
                                          f"{source}; built-ins are never replaced, so rename the plugin's model"))
        return
    # Two plugins: neither can be preferred, so the name is withdrawn until one is uninstalled.
    del _models[name]
    _conflicts[name] = [existing.source, source]
    _report(PluginError(name, source, f"is ignored: model '{name}' is provided by both {existing.source} and "
                                      f"{source}; neither is used until one of them is uninstalled"))


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model class or factory under ``name`` and return it unchanged.

    Example::

        @register_model("tiny")
        class Tiny(nn.Module):
            def __init__(self, data_config: DataConfig, width: int = 32): ...
    """

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _add(name, builder, _loading_source or BUILTIN)
        return builder

    return decorate


def _distribution_label(entry_point: metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return entry_point.value.split(":")[0].split(".")[0]
    return f"{dist.metadata['Name']}=={dist.version}"


def _discover_plugins() -> None:
    global _plugins_discovered, _loading_source
    if _plugins_discovered:
        return
    _plugins_discovered = True
    # The built-ins register first, so plugins never shadow them. They are loaded by name, as
    # plugins are by entry point: the registry imports no model module, and `import zoo` stays
    # free of torch until a model is looked up.
    importlib.import_module(BUILTIN_MODELS)
    # Sorted by name, then package, so reports read the same whatever the order of sys.path.
    found = [(_distribution_label(e), e) for e in metadata.entry_points(group=ENTRY_POINT_GROUP)]
    for source, entry_point in sorted(found, key=lambda pair: (pair[1].name, pair[0])):
        _loading_source = source
        try:
            builder = entry_point.load()
            _add(entry_point.name, builder, source)
        except Exception as exc:  # a broken plugin must not take the zoo down with it
            _report(PluginError(entry_point.name, source, f"failed to load: {type(exc).__name__}: {exc}"))
        finally:
            _loading_source = None


def reset_plugins() -> None:
    """Forget every plugin found so far, so that the next lookup discovers them again.

    Discovery runs once per process; call this after installing or removing a plugin package in a
    running interpreter (a notebook), or in tests that put a plugin on ``sys.path``. Built-ins,
    and models registered by your own code, stay registered.
    """
    global _plugins_discovered
    for name in [name for name, entry in _models.items() if entry.source != BUILTIN]:
        del _models[name]
    _conflicts.clear()
    _plugin_errors.clear()
    _provided.clear()
    model_providers.reset()
    _plugins_discovered = False


def plugin_errors() -> list[PluginError]:
    """Plugins that failed to load, each reported once on stderr (a failed provider as ``prefix/*``)."""
    _discover_plugins()
    failed = [PluginError(f"{prefix}{model_providers.SEPARATOR}*", package, error)
              for prefix, package, error in model_providers.failures()]
    return list(_plugin_errors) + failed


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered models matching an ``fnmatch`` pattern, sorted.

    Example: ``list_models("*mlp")`` -> ``['bn_mlp', 'mlp', 'skip_mlp']``. A provider's models are
    matched only by patterns that start with its prefix: ``list_models("timm/resnet*")``.
    """
    _discover_plugins()
    names = {name for name in _models if fnmatch.fnmatchcase(name, pattern)}
    return sorted(names.union(model_providers.matching(pattern)))


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; a ZooError with a did-you-mean when there is none."""
    _discover_plugins()
    if name in _conflicts:
        providers = " and ".join(_conflicts[name])
        raise ZooError(f"model '{name}' is provided by both {providers}; uninstall one of them")
    found = model_providers.find(name) if name not in _models and name not in _provided else None
    if found is not None:  # a provider's model: its entry is made on first lookup
        _provided[name] = ModelEntry(name, found[0], found[1], _read_hyperparameters(found[0]))
    if name in _provided:
        return _provided[name]
    if name not in _models:
        failed = [e for e in _plugin_errors if e.entry_point == name]
        if failed:
            raise ZooError(f"model '{name}' is unavailable: {failed[0]}")
        raise ZooError(
            f"unknown model '{name}'{did_you_mean(name, _models)}; "
            "run `zoo models` to list the available models"
        )
    return _models[name]


def model_info(name: str) -> dict[str, Any]:
    """Where a model comes from, its hyperparameters (type and default) and its docstring."""
    entry = get_entry(name)
    return {
        "name": entry.name,
        "source": entry.source,
        "builder": f"{entry.builder.__module__}.{entry.builder.__qualname__}",
        "hyperparameters": {
            h.name: {"type": h.type_name, "default": h.default} for h in entry.hyperparameters.values()
        },
        "doc": entry.doc,
    }


def validate_hyperparameters(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """Check ``hparams`` against the model's signature and return them coerced to their types.

    Unknown names, wrong types and values outside a declared range (``Annotated[int, Field(ge=1)]``
    in the model's signature) raise a ZooError that names the hyperparameter.
    """
    entry = get_entry(name)
    valid = entry.hyperparameters
    listing = ", ".join(f"{h.name}: {h.type_name}" for h in valid.values()) or "none"
    checked: dict[str, Any] = {}
    for key, value in hparams.items():
        if key not in valid:
            raise ZooError(
                f"model '{name}' has no hyperparameter '{key}'{did_you_mean(key, valid)}; "
                f"valid: {listing}"
            )
        try:
            checked[key] = pydantic.TypeAdapter(valid[key].annotation).validate_python(value)
        except pydantic.ValidationError as exc:
            raise ZooError(
                f"model '{name}' hyperparameter '{key}' expects {valid[key].type_name}, "
                f"got {value!r} ({exc.errors()[0]['msg']})"
            ) from exc
    return checked


def create_model(name: str, data_config: dict[str, Any], **hparams: Any) -> nn.Module:
    """Build a registered model from ``data_config`` and keyword hyperparameters.

    Hyperparameters that are ``None`` are dropped, so unset options never override a model's
    own defaults. Example: ``create_model("mlp", data_config, fc1=512)``.
    """
    hparams = {k: v for k, v in hparams.items() if v is not None}
    checked = validate_hyperparameters(name, hparams)
    return get_entry(name).builder(data_config, **checked)
