"""Patients, staff and teams, conversations (tickets), messages, notes, attachments."""
