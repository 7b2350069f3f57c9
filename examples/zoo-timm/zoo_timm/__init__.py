"""zoo-timm: timm's architectures in the zoo, as ``timm/<name>``, through one provider entry point."""

from zoo_timm.provider import TimmProvider

__all__ = ["TimmProvider"]
