"""Sending mail: the scheduler loop and leased queue entries to their next hops (`deliver`),
the active set of jobs per destination (`scheduler`), per-destination concurrency and dead
destinations (`destinations`), one SMTP transaction at a TLS policy (`transfer`), next hops
from DNS (`resolve`), connection reuse (`pool`), what a failure means (`failures`), DSNs
(`ndr`) and the `plan --probe` network check (`probe`)."""
