"""Calls through Twilio Programmable Voice: the clinic's IVR and voicemail, reminder calls."""
