"""Email: pure parsing and composing of RFC 5322 messages, and the SMTP adapter."""
