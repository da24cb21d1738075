"""Patients as staff find and keep them: search, the profile, merging an unknown number into
a known patient, starting a conversation. Above the inbox and journeys: it reads and moves
the records of both."""
