"""SMS and MMS through Twilio Programmable Messaging."""
