"""The sandbox every process-starting runner uses: launcher, limits, cgroups, namespaces.

Public surface: ``Sandbox`` (run a ``JobSpec`` to a ``Finished``), ``Limits`` and
``NetworkPolicy`` (what a job may use), ``SandboxFeatures``/``host_features`` (what this
host can isolate), and ``StopReason``.
"""

from .features import SandboxFeatures, host_features, probe
from .isolation import Isolation
from .limits import Limits, NetworkPolicy
from .outcome import Finished, StopReason
from .process import SIGINT_GRACE_S, SIGTERM_GRACE_S, JobSpec, Sandbox

__all__ = [
    "SIGINT_GRACE_S", "SIGTERM_GRACE_S", "Finished", "Isolation", "JobSpec", "Limits",
    "NetworkPolicy",
    "Sandbox", "SandboxFeatures", "StopReason", "host_features", "probe",
]
