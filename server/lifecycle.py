"""Events the server runner sends to the app (a Pyramid event, so the runner needs no app internals)."""


class ServerStopping:
    """Sent by the runner after it stopped accepting connections; ``grace`` is seconds jobs may still run."""

    def __init__(self, grace: float | None = None):
        self.grace = grace
