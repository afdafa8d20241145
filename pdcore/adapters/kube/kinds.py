"""The resources kubepd reads and writes, named once (deploy/crds defines the custom ones),
and the labels and annotations it puts on them."""

from __future__ import annotations

from pdcore.adapters.kube.client import Resource

GROUP, VERSION = "kubepd.io", "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

TIKV_CLUSTERS = Resource(GROUP, VERSION, "tikvclusters")
TIKV_STORES = Resource(GROUP, VERSION, "tikvstores")
PLACEMENT_RULES = Resource(GROUP, VERSION, "placementrules")
REGION_OPERATORS = Resource(GROUP, VERSION, "regionoperators")
SCHEDULING_POLICIES = Resource(GROUP, VERSION, "schedulingpolicies")
PD_METAS = Resource(GROUP, VERSION, "pdmetas")
KEYSPACES = Resource(GROUP, VERSION, "keyspaces")
LEASES = Resource("coordination.k8s.io", "v1", "leases")
CONFIG_MAPS = Resource("", "v1", "configmaps")
EVENTS = Resource("", "v1", "events")

CLUSTER_LABEL = "kubepd.io/cluster"
STORE_ID_LABEL = "kubepd.io/store-id"
# A candidate that should hold a role (the operator, for the scheduler role) asks the
# holder to hand it over by naming itself here, with the time it last asked.
PREFERRED_HOLDER = "kubepd.io/preferred-holder"
PREFERRED_TIME = "kubepd.io/preferred-time"
