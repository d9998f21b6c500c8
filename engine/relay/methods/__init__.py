"""Encryption methods behind the hand-off seam (`engine.relay.methods.base.EncryptionMethod`)."""

from engine.relay.methods.third_party import ThirdPartyGateway

__all__ = ["ThirdPartyGateway", "builtin_methods"]


def builtin_methods() -> dict:
    """The methods this relay implements, by the name the config uses."""
    return {"third_party": ThirdPartyGateway()}
