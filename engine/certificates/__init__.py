"""The relay's certificates: stored and loaded bundles (`store`) and the operator's
operations on them, CSR, PFX import and export, self-signed (`ops`)."""
