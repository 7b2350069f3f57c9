"""Model providers: plugins that offer a whole family of models under one name prefix.

A one-model plugin names its class in the ``zoo.models`` entry-point group. A library with a
thousand architectures registers one *provider* instead, in the ``zoo.model_providers`` group;
the entry point's name is the prefix its models are listed under::

    [project.entry-points."zoo.model_providers"]
    timm = "zoo_timm.provider:TimmProvider"      # models "timm/resnet18", "timm/vit_tiny_patch16_224", ...

The object behind the entry point (a class, instantiated without arguments, or an instance) has:

* ``names() -> list[str]``: every model it offers, without the prefix;
* ``builder(name) -> callable``: a model factory following the registry's contract (first
  parameter ``data_config``, then typed keyword hyperparameters with defaults); called only for
  the model asked for, so nothing else is built or imported;
* optionally ``pretrained_weights(name, data_config) -> dict[str, Tensor]``: the weights
  ``model.pretrained: true`` starts from, adapted to the data where the library can (input
  channels, image size); ``checked``: the few names ``zoo models check`` builds when not asked
  for the family by name; ``description``: a few words for the family's row in ``zoo models``.

The builder's docstring is the model's description, as for any registered model.

Discovery reads entry-point metadata only. A provider's package is imported the first time a
name or a pattern with its prefix is looked up, so ``zoo models 'mlp*'`` never imports timm.
Patterns reach a provider's models only when they start with its prefix (``timm/resnet*``):
a bare ``*`` stays a readable table instead of a thousand rows.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from zoo.errors import ZooError, did_you_mean

PROVIDER_GROUP = "zoo.model_providers"
SEPARATOR = "/"


@dataclass
class ProviderSlot:
    """One provider entry point: found from metadata, imported on first use."""

    prefix: str
    source: str  # "package==version"
    entry_point: metadata.EntryPoint | None
    provider: Any = None
    error: str | None = None  # why it cannot be used, once known
    _names: list[str] | None = field(default=None, repr=False)

    def load(self) -> Any | None:
        """The provider object, imported now if it was not yet; None when it failed (see ``error``)."""
        if self.provider is None and self.error is None and self.entry_point is not None:
            try:
                target = self.entry_point.load()
                self.provider = target() if isinstance(target, type) else target
            except Exception as exc:  # a broken plugin must not take the zoo down with it
                self.error = f"failed to load: {type(exc).__name__}: {exc}"
        return self.provider

    def names(self) -> list[str]:
        """Every model name this provider offers, without the prefix (empty when it failed)."""
        if self._names is None:
            provider = self.load()
            self._names = sorted(provider.names()) if provider is not None else []
        return self._names

    def summary(self) -> str:
        provider = self.load()
        about = getattr(provider, "description", "") if provider is not None else ""
        return f"{len(self.names()):,} models{f' from {about}' if about else ''}; " \
               f"`zoo models '{self.prefix}/*'` lists them"


_slots: dict[str, ProviderSlot] = {}
_discovered = False


def _label(entry_point: metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return entry_point.value.split(":")[0].split(".")[0]
    return f"{dist.metadata['Name']}=={dist.version}"


def slots() -> dict[str, ProviderSlot]:
    """Every provider entry point by prefix; two packages claiming one prefix disable it."""
    global _discovered
    if not _discovered:
        _discovered = True
        found = sorted(((e.name, _label(e), e) for e in metadata.entry_points(group=PROVIDER_GROUP)),
                       key=lambda t: (t[0], t[1]))
        for prefix, source, entry_point in found:
            if prefix in _slots:
                other = _slots[prefix]
                _slots[prefix] = ProviderSlot(prefix, f"{other.source} and {source}", None, error=(
                    f"is ignored: prefix '{prefix}/' is provided by both {other.source} and {source}; "
                    "neither is used until one of them is uninstalled"))
                continue
            _slots[prefix] = ProviderSlot(prefix, source, entry_point)
    return _slots


def reset() -> None:
    """Forget the providers found so far (see ``zoo.registry.reset_plugins``)."""
    global _discovered
    _slots.clear()
    _discovered = False


def add_provider(prefix: str, provider: Any, source: str) -> None:
    """Register a provider object in this process, as if it were installed (notebooks, tests)."""
    slots()[prefix] = ProviderSlot(prefix, source, None, provider=provider)


def split(name: str) -> tuple[str, str] | None:
    """``("timm", "resnet18")`` for ``"timm/resnet18"``; None for a name without a provider prefix."""
    prefix, sep, rest = name.partition(SEPARATOR)
    return (prefix, rest) if sep and prefix in slots() else None


def find(name: str) -> tuple[Any, str] | None:
    """(builder, source) for a provider's model name; None when no provider owns its prefix.

    A name under a known prefix that the provider does not offer is a ZooError with a did-you-mean.
    """
    parts = split(name)
    if parts is None:
        return None
    prefix, rest = parts
    slot = slots()[prefix]
    provider = slot.load()
    if provider is None:
        raise ZooError(f"model '{name}' is unavailable: plugin '{prefix}' from package {slot.source} {slot.error}")
    if rest not in slot.names():
        hint = did_you_mean(rest, slot.names()).replace("'", f"'{prefix}{SEPARATOR}", 1)
        raise ZooError(f"unknown model '{name}'{hint}; "
                       f"run `zoo models '{prefix}/*'` to list the models from {slot.source}")
    return provider.builder(rest), slot.source


def matching(pattern: str) -> list[str]:
    """Full names (``prefix/name``) of provider models matching ``pattern``; only prefixed patterns reach them."""
    names: list[str] = []
    for prefix, slot in slots().items():
        if pattern.startswith(prefix + SEPARATOR):
            names += [f"{prefix}{SEPARATOR}{n}" for n in slot.names()
                      if fnmatch.fnmatchcase(f"{prefix}{SEPARATOR}{n}", pattern)]
    return names


def checked(pattern: str) -> list[str]:
    """The provider models ``zoo models check PATTERN`` builds besides ``matching(pattern)``.

    A pattern that does not name a provider (``*``) still covers each one through the few
    architectures it lists as ``checked``, instead of building every model it has.
    """
    names: list[str] = []
    for prefix, slot in slots().items():
        if pattern.startswith(prefix + SEPARATOR):
            continue
        provider = slot.load()
        for name in getattr(provider, "checked", ()) if provider is not None else ():
            full = f"{prefix}{SEPARATOR}{name}"
            if fnmatch.fnmatchcase(full, pattern):
                names.append(full)
    return names


def families(pattern: str) -> list[ProviderSlot]:
    """Providers whose ``prefix/*`` matches ``pattern`` but that the pattern does not name:
    shown as one summary row each in ``zoo models``."""
    return [slot for prefix, slot in slots().items()
            if not pattern.startswith(prefix + SEPARATOR) and fnmatch.fnmatchcase(f"{prefix}{SEPARATOR}*", pattern)]


def failures() -> list[tuple[str, str, str]]:
    """(prefix, package, error) for every provider known to be unusable so far.

    Only providers already imported (or claimed twice) can be known to fail: listing built-in
    models never imports a provider just to check it.
    """
    return [(slot.prefix, slot.source, slot.error) for slot in slots().values() if slot.error]


def pretrained_weights(name: str, data_config: dict[str, Any]) -> dict[str, Any] | None:
    """The provider's default pretrained weights for ``name``; None when it offers none.

    Only for provider models; errors from the provider (no such weights, Hub unreachable and not
    cached) are the provider's to phrase as ZooErrors.
    """
    parts = split(name)
    if parts is None:
        return None
    provider = slots()[parts[0]].load()
    loader = getattr(provider, "pretrained_weights", None)
    return loader(parts[1], data_config) if callable(loader) else None
