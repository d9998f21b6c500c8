"""Inbound decryption: S/MIME for internal recipients whose key the relay holds.

`inbound` is intake's step (when it applies, the header it stamps, never raising);
`envelope` finds, opens and rebuilds an S/MIME message (pure, on bytes). The keys are read
by `engine.certificates.smime_keys`, which the config's checks share.
"""
