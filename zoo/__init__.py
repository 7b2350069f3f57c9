"""zoo-launch: a model zoo and one Accelerate fit loop, driven by YAML recipes."""

from zoo.errors import ZooError
from zoo.registry import create_model, list_models, model_info, register_model

__all__ = ["ZooError", "create_model", "list_models", "model_info", "register_model"]
__version__ = "0.1.0"
