"""Hub: an omnichannel patient communication hub for clinics."""

__version__ = "0.1.0"
