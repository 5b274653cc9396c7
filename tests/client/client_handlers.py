"""Handlers the client tests register on their server (greenjobs.handlers = ... tests.client.client_handlers)."""
from greenjobs import handler


@handler("client.args")
def echo_args(*args, **kwargs):
    """Return positional and keyword arguments as given, to check that both reach a handler."""
    return {"args": list(args), "kwargs": kwargs}
