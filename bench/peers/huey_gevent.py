"""``python -m bench.peers.huey_gevent …``: huey_consumer, monkey-patched first (for ``-k greenlet``)."""
from gevent import monkey

monkey.patch_all()

from huey.bin.huey_consumer import consumer_main  # noqa: E402

if __name__ == "__main__":
    consumer_main()
