"""The WorkerPool operator: thin kopf handlers -> pure plan -> manifests -> one API wrapper.

Layers, each its own small module:

* :mod:`~hyperpool.controller.naming`, :mod:`~.params` — names, labels, typed parameters;
* :mod:`~.workload`, :mod:`~.rules`, :mod:`~.scaler`, :mod:`~.jobs` — pure ``build_*``
  functions for the Deployment, PrometheusRule, ScaledObject (and job-model Jobs);
* :mod:`~.templates` — user templates (the HyperFlow operator's ConfigMap) replacing built-ins;
* :mod:`~.quota` and :mod:`~.plan` — the quota budget and the pure decision of what to apply;
* :mod:`~.status` — conditions and status diffs; :mod:`~.reconcile` — read, plan, apply;
* :mod:`~.api` — the only module that talks to the API server;
* :mod:`~.handlers`, :mod:`~.command` — kopf registration and ``hyperpool controller``.

Nothing here imports the engine; the engine uses :mod:`~.jobs` for the in-cluster job model.
"""
