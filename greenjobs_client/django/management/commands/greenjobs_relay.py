"""``python manage.py greenjobs_relay``: send the outbox's rows to the greenjobs server, until stopped."""
from __future__ import annotations

import signal

from django.core.management.base import BaseCommand, CommandError

from greenjobs_client.django.outbox import Relay, start_relay


class Command(BaseCommand):
    help = ("Send the greenjobs outbox (greenjobs_client.django.outbox.enqueue) to the server in "
            "settings.GREENJOBS['URL']: poll until SIGTERM/Ctrl-C, or one pass with --once.")

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="send what is due now, then exit")
        parser.add_argument("--interval", type=float, default=None, metavar="S",
                            help="seconds between polls (default GREENJOBS['OUTBOX_INTERVAL'], 1.0)")
        parser.add_argument("--batch", type=int, default=None, metavar="N",
                            help="rows per request (default GREENJOBS['OUTBOX_BATCH'], 100)")
        parser.add_argument("--database", default=None, help="the database alias of the outbox (default: the "
                                                             "router's choice for writes, usually 'default')")

    def handle(self, *args, once: bool = False, interval: float | None = None, batch: int | None = None,
               database: str | None = None, **options):
        if interval is not None and interval <= 0:
            raise CommandError("--interval must be a number of seconds > 0")
        if once:
            relay = Relay(using=database, batch=batch, interval=interval)
            sent = relay.run_once()
            counts = relay.counts()
            self.stdout.write(f"sent {sent}; pending {counts['pending']}, rejected {counts['rejected']}")
            return
        # the relay runs in a thread and this one only waits, so a signal never lands inside a pass
        relay = start_relay(database, batch=batch, interval=interval)
        self.stdout.write(f"greenjobs outbox relay: database {relay.using!r} -> {relay.client.base_url}, "
                          f"polling every {relay.interval:g} s")

        def interrupt(signum, frame):
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, interrupt)
        try:
            while relay.thread.is_alive():
                relay.thread.join(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            relay.stop()
        self.stdout.write("greenjobs outbox relay stopped")
