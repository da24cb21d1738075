"""Rights actions: each ``do_*`` opens one transaction, audits, and commits."""
