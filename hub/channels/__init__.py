"""One folder per provider: pure parse/verify and one async send()."""
