"""Web chat: patients on socket.io namespace ``/chat`` with a signed link; the clinic's side
relays through Redis to whichever ``hub serve`` holds the patient's socket."""
