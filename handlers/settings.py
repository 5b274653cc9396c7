"""Settings of the handlers package."""
from pool.settings import Setting, as_words

TABLE = (
    Setting("greenjobs.handlers", as_words, ("handlers.builtin",), "modules whose @handler functions are registered"),
    Setting("greenjobs.http.allowed_hosts", as_words, ("127.0.0.1", "localhost"),
            "hosts that http.get (and later webhooks) may call"),
)
