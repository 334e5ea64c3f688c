"""Executor pools: the Celery app, the ``hyperpool.run`` task and the command runner."""
