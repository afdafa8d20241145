"""What a TiKVCluster becomes: pure builders of the Kubernetes objects (no I/O).

A StatefulSet whose pods run TiKV and the kubepd sidecar, a headless Service for
peers, a client Service, a PodDisruptionBudget allowing one pod down, a ConfigMap
with TiKV's and kubepd's configuration, and the sidecars' identity: a ServiceAccount
bound (in the cluster's namespace only) to the `kubepd-sidecar` ClusterRole that
deploy/rbac.yaml and the chart define. The operator owns all of them.
"""

from __future__ import annotations

import os
from typing import Any

Obj = dict[str, Any]
PD_PORT, TIKV_PORT, STATUS_PORT = 2379, 20160, 2381
DEFAULT_SIDECAR_IMAGE = "kubepd:0.1.0"
# spec.tls.secretName's Secret is mounted here in both containers; its keys are those of
# a kubernetes.io/tls Secret plus the CA (as cert-manager writes them).
TLS_DIR = "/etc/kubepd/tls"
TLS_FILES = {"cacert": "ca.crt", "cert": "tls.crt", "key": "tls.key"}


def tls_of(body: Obj) -> Obj | None:
    """spec.tls when the cluster asks for TLS (a Secret name), else None."""
    tls = body["spec"].get("tls") or {}
    return tls if tls.get("secretName") else None


def tls_paths() -> dict[str, str]:
    return {flag: f"{TLS_DIR}/{name}" for flag, name in TLS_FILES.items()}


def sidecar_cluster_role() -> str:
    """The ClusterRole the sidecars are bound to (the chart prefixes it with the release)."""
    return os.environ.get("KUBEPD_SIDECAR_CLUSTERROLE", "kubepd-sidecar")


def labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "tikv",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": "kubepd",
    }


def owner(body: Obj) -> Obj:
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(body: Obj, name: str) -> Obj:
    return {
        "name": name,
        "namespace": body["metadata"]["namespace"],
        "labels": labels(body["metadata"]["name"]),
        "ownerReferences": [owner(body)],
    }


def service_account(body: Obj) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(body, f"{body['metadata']['name']}-kubepd"),
    }


def sidecar_role_binding(body: Obj, cluster_role: str | None = None) -> Obj:
    """What the sidecars may do, granted in this namespace only."""
    name = f"{body['metadata']['name']}-kubepd"
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(body, name),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": cluster_role or sidecar_cluster_role(),
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": name, "namespace": body["metadata"]["namespace"]}
        ],
    }


def configmap(body: Obj) -> Obj:
    name = body["metadata"]["name"]
    spec = body["spec"]
    repl = spec.get("replication", {})
    tikv = "\n".join(
        [
            "[pd]",
            f'endpoints = ["127.0.0.1:{PD_PORT}", "{name}-pd:{PD_PORT}"]',
            "[server]",
            "labels = {}",
            "[storage]",
            'data-dir = "/var/lib/tikv"',
            *(
                [
                    "[security]",  # TiKV to its sidecar (and to other TiKVs) over mutual TLS
                    f'ca-path = "{tls_paths()["cacert"]}"',
                    f'cert-path = "{tls_paths()["cert"]}"',
                    f'key-path = "{tls_paths()["key"]}"',
                ]
                if tls_of(body)
                else []
            ),
            "",
        ]
    )
    kubepd = "\n".join(
        [
            f'cluster = "{name}"',
            f"max-replicas = {repl.get('maxReplicas', 3)}",
            f"location-labels = {list(repl.get('locationLabels', []))!r}".replace("'", '"'),
            "",
        ]
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(body, f"{name}-config"),
        "data": {"tikv.toml": tikv, "kubepd.toml": kubepd},
    }


def headless_service(body: Obj) -> Obj:
    name = body["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(body, f"{name}-peer"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": labels(name),
            "ports": [{"name": "tikv", "port": TIKV_PORT}, {"name": "pd", "port": PD_PORT}],
        },
    }


def client_service(body: Obj) -> Obj:
    name = body["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(body, f"{name}-pd"),
        "spec": {
            "selector": labels(name),
            "ports": [{"name": "pd", "port": PD_PORT}, {"name": "status", "port": STATUS_PORT}],
        },
    }


def pdb(body: Obj) -> Obj:
    name = body["metadata"]["name"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(body, name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(name)}},
    }


def statefulset(body: Obj, partition: int | None = None) -> Obj:
    name = body["metadata"]["name"]
    spec = body["spec"]
    sidecar = spec.get("sidecar", {})
    storage = spec.get("storage", {})
    repl = spec.get("replication", {})
    topology = [
        {
            "weight": 100,
            "podAffinityTerm": {"topologyKey": key, "labelSelector": {"matchLabels": labels(name)}},
        }
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "KUBEPD_CLUSTER", "value": name},
    ]
    tls = tls_of(body)
    scheme = "https" if tls else "http"
    # With TLS, members reach each other by DNS name (what a certificate can name: e.g.
    # *.<cluster>-peer.<namespace>.svc), not by pod IP.
    advertise_host = f"$(POD_NAME).{name}-peer.$(POD_NAMESPACE).svc" if tls else "$(POD_IP)"
    tls_args = [arg for flag, path in tls_paths().items() for arg in (f"--{flag}", path)]
    if tls and tls.get("certAllowedCN"):
        tls_args += ["--cert-allowed-cn", ",".join(tls["certAllowedCN"])]
    tls_mount = [{"name": "tls", "mountPath": TLS_DIR, "readOnly": True}] if tls else []
    # The kubelet cannot present a client certificate: with mutual TLS the probes only
    # check that the status port accepts connections.
    probe: Obj = (
        {"tcpSocket": {"port": STATUS_PORT}}
        if tls
        else {"httpGet": {"path": "/health", "port": STATUS_PORT}}
    )
    pd_container = {
        "name": "kubepd",
        "image": spec.get("pdImage", DEFAULT_SIDECAR_IMAGE),
        "env": env,
        "args": [
            "sidecar",
            "--client-urls",
            f"{scheme}://0.0.0.0:{PD_PORT}",
            "--advertise-client-urls",
            f"{scheme}://{advertise_host}:{PD_PORT}",
            "--status-addr",
            f"0.0.0.0:{STATUS_PORT}",
            "--lease-duration",
            str(sidecar.get("leaseDurationSeconds", 5)),
            "--renew-period",
            str(sidecar.get("renewPeriodSeconds", 1)),
            "--data-dir",
            "/var/lib/kubepd",
            *(["--client-port-http", "off"] if sidecar.get("clientPortHTTP") is False else []),
            *(tls_args if tls else []),
        ],
        "ports": [
            {"name": "pd", "containerPort": PD_PORT},
            {"name": "pd-status", "containerPort": STATUS_PORT},
        ],
        "readinessProbe": {**probe, "periodSeconds": 5},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 6},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "volumeMounts": [
            {"name": "data", "mountPath": "/var/lib/kubepd", "subPath": "kubepd"},
            *tls_mount,
        ],
    }
    # The sidecar runs as 65534, but a fresh volume (and the subPath kubelet makes in it)
    # belongs to root; fsGroup does not reach hostPath or local volumes. Hand the sidecar
    # its directory first, with no capability beyond chown.
    data_owner = {
        "name": "kubepd-data",
        "image": pd_container["image"],
        "command": [
            "sh",
            "-c",
            "mkdir -p /data/kubepd && chown 65534:65534 /data/kubepd && chmod 0750 /data/kubepd",
        ],
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER"]},
        },
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    tikv_container = {
        "name": "tikv",
        "image": spec["image"],
        "env": env,
        "args": [
            "--pd=127.0.0.1:2379",
            f"--addr=0.0.0.0:{TIKV_PORT}",
            f"--advertise-addr=$(POD_NAME).{name}-peer.$(POD_NAMESPACE).svc:{TIKV_PORT}",
            "--data-dir=/var/lib/tikv",
            "--config=/etc/tikv/tikv.toml",
        ],
        "ports": [{"name": "tikv", "containerPort": TIKV_PORT}],
        "readinessProbe": {"tcpSocket": {"port": TIKV_PORT}, "periodSeconds": 10},
        "resources": spec.get("resources", {}),
        "volumeMounts": [
            {"name": "data", "mountPath": "/var/lib/tikv", "subPath": "tikv"},
            {"name": "config", "mountPath": "/etc/tikv"},
            *tls_mount,
        ],
    }
    strategy: Obj = {"type": "RollingUpdate", "rollingUpdate": {"partition": partition or 0}}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(body, name),
        "spec": {
            "replicas": spec["replicas"],
            "serviceName": f"{name}-peer",
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels(name)},
            "updateStrategy": strategy,
            "template": {
                "metadata": {
                    "labels": labels(name),
                    "annotations": {
                        "kubepd.io/location-labels": ",".join(repl.get("locationLabels", []))
                    },
                },
                "spec": {
                    "serviceAccountName": f"{name}-kubepd",
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": topology
                        }
                    },
                    "initContainers": [data_owner],
                    "containers": [tikv_container, pd_container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": f"{name}-config"}},
                        *(
                            [{"name": "tls", "secret": {"secretName": tls["secretName"]}}]
                            if tls
                            else []
                        ),
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        **(
                            {"storageClassName": storage["storageClassName"]}
                            if storage.get("storageClassName")
                            else {}
                        ),
                        "resources": {"requests": {"storage": storage.get("size", "10Gi")}},
                    },
                }
            ],
        },
    }


def all_objects(body: Obj, partition: int | None = None) -> list[Obj]:
    """Everything the cluster owns. `partition` holds pods at their revision (the
    operator lowers it one pod at a time during a rolling upgrade); default: all."""
    return [
        service_account(body),
        sidecar_role_binding(body),
        configmap(body),
        headless_service(body),
        client_service(body),
        pdb(body),
        statefulset(body, body["spec"]["replicas"] if partition is None else partition),
    ]
