"""Sending mail: leased queue entries to their next hops (`deliver`), one SMTP transaction at
a TLS policy (`transfer`), next hops from DNS (`resolve`), connection reuse (`pool`), what a
failure means (`failures`), DSNs (`ndr`) and the `plan --probe` network check (`probe`)."""
