"""The greenlet executor: io jobs run here, as greenlets of one bounded pool."""
