"""Pure policy rules over the typed config, shared by the relay and the downgrade guard:
address groups and domain matching (`groups`); TLS level order, enforced-TLS rules, routing
and the special group names (`rules`)."""
