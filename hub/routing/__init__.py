"""Routing of inbound messages: rules (conditions -> actions), urgent triage, business hours.

Import the modules themselves (``from hub.routing import actions``); this package imports
nothing, so intake can call routing without an import cycle through ``hub.inbox.actions``.
"""
