"""zoo-launch: a model zoo and one Accelerate fit loop, driven by YAML recipes."""

from typing import Any

from zoo.errors import ZooError

__all__ = ["ZooError", "create_model", "list_models", "model_info", "register_model"]
__version__ = "0.1.0"

_REGISTRY_NAMES = {"create_model", "list_models", "model_info", "register_model"}


def __getattr__(name: str) -> Any:
    # The registry imports torch (about 2.5 s); `import zoo.plot` (the curves drawer's process) and
    # other torch-free modules should not pay for it, so it is imported on first use.
    if name in _REGISTRY_NAMES:
        from zoo import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
