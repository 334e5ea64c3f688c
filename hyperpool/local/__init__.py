"""The local pool runtime: WorkerPools as supervised, autoscaled processes on one machine.

The same manifests and the same scaling formula as on Kubernetes, with the machine's cores and
memory as the ResourceQuota. Public surface: :func:`local_pools` (embedded in ``hyperpool
run``), :class:`Supervisor` (``hyperpool pools up``) and :func:`pools_from_manifests`.
"""

from hyperpool.local.embedded import local_pools
from hyperpool.local.manifests import PoolConfig, pools_from_manifests
from hyperpool.local.supervisor import Supervisor, SupervisorOptions

__all__ = ["PoolConfig", "Supervisor", "SupervisorOptions", "local_pools",
           "pools_from_manifests"]
