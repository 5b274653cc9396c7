"""Job model, durable store and executors: the parts shared by the server and the CPU workers.

Nothing in this package imports Pyramid or the ``server`` package.
"""
