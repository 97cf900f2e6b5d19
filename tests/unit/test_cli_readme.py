"""The README's quick start works as printed: the images its `kubectl apply` and `helm install`
lines run are the ones `hack/kudig-images` (the line before them) builds, since no registry has
kudig's images. `helm template` renders the README's exact `helm install` arguments (helm from
`hack/helm`, cached under ~/.cache/kudig; no cluster needed)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def quick_start() -> list[str]:
    """The README's shell lines (comments cut), in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def built_images() -> set[str]:
    script = (ROOT / "hack" / "kudig-images").read_text(encoding="utf-8")
    return set(re.findall(r'"\$MKIMAGE" (localhost/\S+:\S+)', script))


def images_of(docs: list[dict[str, Any]]) -> set[str]:
    out = set()
    for doc in docs:
        if doc.get("kind") != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            out.add(container["image"])
            out |= {e["value"] for e in container.get("env", []) if e["name"] == "KUDIG_RUNNER_IMAGE"}
    return out


def line(prefix: str) -> tuple[int, str]:
    lines = quick_start()
    found = [(i, x) for i, x in enumerate(lines) if x.startswith(prefix)]
    assert len(found) == 1, f"one README line starting with {prefix!r}: {found}"
    return found[0]


def test_the_quick_start_builds_the_images_before_it_deploys_them() -> None:
    assert {"localhost/kudig/operator:dev", "localhost/kudig/runner:dev"} <= built_images()
    build, _ = line("hack/kudig-images")
    apply, text = line("kubectl apply -f crds/ -f deploy/operator.yaml")
    install, _ = line("helm install ")
    assert build < apply and build < install
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "operator.yaml").read_text()) if d]
    assert images_of(docs) and images_of(docs) <= built_images(), text


@pytest.mark.slow  # the first run builds helm
def test_the_readme_helm_install_runs_the_built_images() -> None:
    helm = subprocess.run([str(ROOT / "hack" / "helm")], capture_output=True, text=True, timeout=1200)
    assert helm.returncode == 0, helm.stderr
    _, text = line("helm install ")
    args = shlex.split(text)
    assert args[:4] == ["helm", "install", "kudig", "helm/kudig"], text
    flags = [a for a in args[4:] if a != "--create-namespace"]  # install-only
    proc = subprocess.run(
        [helm.stdout.strip().splitlines()[-1], "template", "kudig", "helm/kudig", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    images = images_of([d for d in yaml.safe_load_all(proc.stdout) if d])
    assert images and images <= built_images(), (
        f"{text}\nruns {sorted(images)}, built: {sorted(built_images())}"
    )
