from hub.errors import HubError


class ConsentRefused(HubError):
    """A send was attempted without an allowing Decision; the message says why."""

    def __init__(self, reason: str, code: str = "refused") -> None:
        self.code = code
        super().__init__(reason)
