"""The typed desired state: frozen pydantic models, one module per config section."""

from engine.config.model.base import EnvSecret, FileSecret, Model
from engine.config.model.dlp import DLP, ActionPlan, Policy, Rule
from engine.config.model.encryption import Encryption
from engine.config.model.root import PolicyTest, RelayConfig
from engine.config.model.system import Listener, System
from engine.config.model.transport import TLS, Delivery, EnforcedTLSRule, Route

MODELS_BY_VERSION = {1: RelayConfig}
LATEST_VERSION = max(MODELS_BY_VERSION)

__all__ = [
    "DLP",
    "LATEST_VERSION",
    "MODELS_BY_VERSION",
    "TLS",
    "ActionPlan",
    "Delivery",
    "Encryption",
    "EnforcedTLSRule",
    "EnvSecret",
    "FileSecret",
    "Listener",
    "Model",
    "Policy",
    "PolicyTest",
    "RelayConfig",
    "Route",
    "Rule",
    "System",
]
