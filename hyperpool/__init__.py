"""hyperpool: event-driven worker pools for HyperFlow scientific workflows.

Task types named in ``workflow.config.executionModels.json`` are published to their own
RabbitMQ queue and executed by autoscaled Celery worker pools; every other task runs in the
job model (one fresh executor process, or one Kubernetes Job, per task).
"""

__version__ = "0.1.0"
