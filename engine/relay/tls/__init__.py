"""TLS levels, contexts and the negotiated-strength check (`levels`); MTA-STS policies (`mtasts`)."""
