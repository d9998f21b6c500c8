"""TLS levels, contexts and the negotiated-strength check (`levels`)."""
