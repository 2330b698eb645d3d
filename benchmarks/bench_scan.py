"""Benchmark: how long ``sealpy.core.pipeline.scan`` takes on a realistic context.

Not a test (no timing assertions live in tests). It generates, in a temporary directory, a
context of 200 manifest files (multi-document Deployments, CronJobs and CRDs, a few
templated ``.tmpl`` files) and 5 charts (each with a subchart, one enabled through
``<name>.values.yaml``, one packaged as ``.tgz``), runs one warm-up scan (it loads the Helm
library), then reports the median of several timed scans::

    .venv/bin/python benchmarks/bench_scan.py [--runs 7] [--manifests 200] [--charts 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

import helm_python
import yaml

from sealpy.core import pipeline


def deployment(index: int, doc: int) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: app-{index}-{doc}
          labels: {{app: app-{index}, tier: backend}}
        spec:
          replicas: 2
          selector:
            matchLabels: {{app: app-{index}}}
          template:
            metadata:
              labels: {{app: app-{index}}}
            spec:
              initContainers:
                - name: migrate
                  image: registry.example.com:5000/team/migrate:{index % 7}.0
                  command: ["/bin/migrate", "--wait"]
              containers:
                - name: web
                  image: "nginx:1.{index % 25}"   # pinned
                  ports: [{{containerPort: 80}}]
                  env:
                    - {{name: MODE, value: production}}
                    - {{name: LEVEL, value: info}}
                  resources:
                    limits: {{cpu: 500m, memory: 256Mi}}
                - {{name: sidecar, image: envoyproxy/envoy:v1.{index % 30}}}
        """
    )


def cronjob(index: int) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: batch/v1
        kind: CronJob
        metadata: {{name: job-{index}}}
        spec:
          schedule: "*/5 * * * *"
          jobTemplate:
            spec:
              template:
                spec:
                  restartPolicy: OnFailure
                  containers:
                    - name: job
                      image: quay.io/example/job-{index % 11}:v{index % 3}
        """
    )


def custom_resource(index: int) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: operator.example.com/v1
        kind: Cluster
        metadata: {{name: db-{index}}}
        spec:
          instances: 3
          sidecarImage: ghcr.io/example/sidecar:{index % 5}.1
          backup:
            foo_image: ghcr.io/example/backup:{index % 4}
        """
    )


def template_file(index: int) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: v1
        kind: Pod
        metadata: {{name: {{{{ .name }}}}-{index}}}
        spec:
          containers:
            - name: a
              image: {{{{ .Values.registry }}}}/app:{{{{ .Values.tag }}}}
            - name: b
              image: busybox:1.36 # {{{{ .comment }}}}
        """
    )


def write_manifests(root: Path, count: int) -> None:
    for index in range(count):
        directory = root / "manifests" / f"group-{index % 10}"
        directory.mkdir(parents=True, exist_ok=True)
        if index % 20 == 19:
            (directory / f"pod-{index}.tmpl").write_text(template_file(index))
            continue
        documents = [deployment(index, 0), deployment(index, 1), cronjob(index)]
        if index % 4 == 0:
            documents.append(custom_resource(index))
        (directory / f"app-{index}.yaml").write_text("---\n".join(documents))


def write_chart(directory: Path, name: str, values: dict, subchart: bool) -> None:
    directory.mkdir(parents=True)
    meta: dict = {"apiVersion": "v2", "name": name, "version": "1.0.0"}
    if subchart:
        meta["dependencies"] = [{"name": "cache", "version": "1.0.0", "condition": "cache.enabled"}]
    (directory / "Chart.yaml").write_text(yaml.safe_dump(meta))
    (directory / "values.yaml").write_text(yaml.safe_dump(values))
    templates = directory / "templates"
    templates.mkdir()
    (templates / "_helpers.tpl").write_text(
        '{{- define "img" -}}{{ .repository }}:{{ .tag }}{{- end -}}\n'
    )
    for part in range(4):
        (templates / f"deploy-{part}.yaml").write_text(
            textwrap.dedent(
                f"""\
                apiVersion: apps/v1
                kind: Deployment
                metadata:
                  name: {{{{ .Release.Name }}}}-{part}
                spec:
                  template:
                    spec:
                      containers:
                        - name: main
                          image: {{{{ include "img" .Values.image | quote }}}}
                          args: [{{{{ .Values.args | join "," | quote }}}}]
                        {{{{- if .Values.sidecar }}}}
                        - name: sidecar
                          image: {{{{ .Values.sidecar }}}}
                        {{{{- end }}}}
                """
            )
        )
    if subchart:
        write_chart(
            directory / "charts" / "cache",
            "cache",
            {"image": {"repository": "redis", "tag": "7.2"}, "args": ["--save"]},
            subchart=False,
        )


def build_context(root: Path, manifests: int, charts: int) -> Path:
    root.mkdir(parents=True)
    (root / "Kubefile").write_text("FROM scratch\nCOPY . .\n")
    write_manifests(root, manifests)
    charts_dir = root / "charts"
    charts_dir.mkdir()
    for index in range(charts):
        values = {
            "image": {"repository": f"ghcr.io/example/chart-{index}", "tag": "1.0"},
            "args": ["--port=8080"],
            "sidecar": "envoyproxy/envoy:v1.29" if index % 2 else "",
            "cache": {"enabled": False},
        }
        target = charts_dir / f"chart-{index}"
        if index == charts - 1:  # one packaged chart, as `helm pull` leaves it
            source = root.parent / "chart-sources" / f"chart-{index}"
            write_chart(source, f"chart-{index}", values, subchart=True)
            helm_python.package(source, destination=charts_dir)
        else:
            write_chart(target, f"chart-{index}", values, subchart=True)
    (charts_dir / "chart-0.values.yaml").write_text("cache:\n  enabled: true\n")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed scans after one warm-up")
    parser.add_argument("--manifests", type=int, default=200)
    parser.add_argument("--charts", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sealpy-bench-scan-") as tmp:
        root = build_context(Path(tmp) / "context", args.manifests, args.charts)
        started = time.perf_counter()
        result = pipeline.scan(root)  # warm-up: the OS caches the Helm library's pages
        first = time.perf_counter() - started
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            pipeline.scan(root)
            times.append(time.perf_counter() - started)
    images = result.images
    print(
        f"scan of {args.manifests} manifest files and {args.charts} charts: "
        f"{len(images.images)} images, {len(images.warnings)} warnings"
    )
    print(f"first scan: {first * 1000:.0f} ms")
    print(
        f"median of {args.runs} scans: {statistics.median(times) * 1000:.0f} ms "
        f"(min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    main()
