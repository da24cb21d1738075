"""Errors shared across the domain."""


class HubError(Exception):
    """Base for errors the hub raises on purpose."""


class ConfigError(HubError):
    """A setting is missing or malformed; the message is one line a person can act on."""

    def __init__(self, variable: str, problem: str, expected: str) -> None:
        self.variable = variable
        self.problem = problem
        self.expected = expected
        super().__init__(f"{variable}: {problem}; expected {expected}")
