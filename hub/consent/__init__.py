"""Consent records, reachability and the gate every send passes: ``may_send`` -> Decision."""
