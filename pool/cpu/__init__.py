"""cpu jobs: the broker wiring, the embedded SQLite transport, the server-side dispatcher, the worker
processes and their supervisor.  Workers import this package and the handlers, never Pyramid."""
