"""Helm chart charts/micropipe: lint, render with a real Helm engine (helm-python-sdk), Kubernetes schemas,
values schema, `fail` messages, secret handling, pod security, profiles, and the checkov scan."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is in requirements-dev.lock")

import micropipe  # noqa: E402
from micropipe import cli  # noqa: E402
from pipelines import _kfp, _server  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "micropipe"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
K8S_VERSIONS = ("1.27.0", "1.37.0")  # the chart's kubeVersion floor, and the newest schemas we have
RELEASE, NAMESPACE = "mp", "micropipe"
CHECKOV = Path(os.environ.get("MICROPIPE_CHECKOV", ROOT / ".venv-scan" / "bin" / "checkov"))

# Values with throw-away credentials that must never show up outside the Secret.
DEV_CREDS = {"accessKey": "dev-access-7f3a", "secretKey": "dev-secret-9b1c-long", "endpoint": "http://s3.example:9000"}


# ------------------------------------------------------------------------------------------ helpers
def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of user values over the defaults: maps merge, null deletes a key."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def default_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / "examples" / f"{name}.yaml").read_text())


@pytest.fixture(scope="module")
def chart():
    return helm.Chart.load(str(CHART))


def render(chart, values: dict[str, Any] | None = None, revision: int = 1) -> dict[str, str]:
    return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, revision=revision)


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for path, text in sorted(rendered.items()):
        if not path.endswith("NOTES.txt"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
            for d in docs if d["kind"] in ("Job", "Deployment")]


VALUE_SETS = {
    "default": {},
    **{p.stem: yaml.safe_load(p.read_text()) for p in EXAMPLES},
    "gpu-multiuser-token": {"upload": {"profile": "gpu", "multiUser": True, "pipelines": ["cp_surrogate"],
                                       "tokenSecret": {"name": "kfp-token"}, "namePrefix": "lab "},
                            "imagePullSecrets": ["ghcr-pull"],
                            "image": {"digest": "sha256:" + "a" * 64},
                            "componentImages": {"base": "registry.example.org:5000/ml/micropipe-base:0.1.0-lab",
                                                "torch": "registry.example.org:5000/ml/micropipe-torch@sha256:"
                                                         + "b" * 64}},
    "inline-credentials": {"storage": {"create": True, **DEV_CREDS}},
}


@pytest.fixture(scope="module")
def rendered_sets(chart) -> dict[str, list[dict[str, Any]]]:
    return {name: manifests(render(chart, values)) for name, values in VALUE_SETS.items()}


# ------------------------------------------------------------------------------------- chart basics
def test_examples_exist():
    assert {p.stem for p in EXAMPLES} >= {"dev-minio", "existing-secret"}


def test_chart_metadata_matches_the_package():
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["appVersion"] == micropipe.__version__
    from components import BASE_IMAGE
    repository = default_values()["image"]["repository"]
    assert BASE_IMAGE.startswith(f"{repository}:") or "MICROPIPE_BASE_IMAGE" in os.environ


@pytest.mark.parametrize("values", [None, *EXAMPLES], ids=lambda v: getattr(v, "stem", "default"))
def test_helm_lint_is_clean(values):
    report = helm.lint(str(CHART), yaml.safe_load(values.read_text()) if values else None,
                       namespace=NAMESPACE, kube_version=f"v{K8S_VERSIONS[0]}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors; infos pass
    assert not problems and not report["errors"], report


@pytest.mark.parametrize("name", list(VALUE_SETS))
@pytest.mark.parametrize("k8s", K8S_VERSIONS)
def test_every_manifest_validates_against_kubernetes_schemas(rendered_sets, name, k8s):
    docs = rendered_sets[name]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, k8s, strict=True)  # raises with the offending field
        assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]


def test_default_render_has_what_the_issue_asks(rendered_sets):
    kinds = sorted(d["kind"] for d in rendered_sets["default"])
    assert kinds == ["ConfigMap", "Job", "NetworkPolicy", "ServiceAccount"]
    dev = sorted(d["kind"] for d in rendered_sets["dev-minio"])
    assert dev == ["ConfigMap", "Deployment", "Job", "Job", "NetworkPolicy", "NetworkPolicy",
                   "PersistentVolumeClaim", "Secret", "Service", "ServiceAccount"]


# ----------------------------------------------------------------------------------- values schema
def test_values_schema_accepts_defaults_and_examples(chart):
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    for name, over in VALUE_SETS.items():
        values = merge(default_values(), over)
        jsonschema.Draft7Validator(schema).validate(values)
        chart.validate_schema(values)  # Helm's own validator agrees
        assert name


BAD_VALUES = [
    ("upload:\n  backoffLimit: three\n", "/upload/backoffLimit", "three"),
    ("storage:\n  existingSecrt: s3-creds\n", "existingSecrt", "existingSecrt"),
    ("profiles:\n  gpu:\n    step_classes:\n      gpu:\n        accelerator_limit: 0\n",
     "/profiles/gpu/step_classes/gpu/accelerator_limit", "0"),
    ("profiles:\n  gpu:\n    pipeline_root: /local/dir\n", "/profiles/gpu/pipeline_root", "/local/dir"),
    ("profiles:\n  gpu:\n    step_classes:\n      gpu:\n        memory_limit: 64 gigabytes\n",
     "/profiles/gpu/step_classes/gpu/memory_limit", "64 gigabytes"),
    ("upload:\n  pipelines: [ve_generation, nope]\n", "/upload/pipelines/1", "nope"),
    ("componentImages:\n  torch: registry.example.org/ml/micropipe-torch latest\n", "/componentImages/torch",
     "latest"),
    ("componentImages:\n  cuda: registry.example.org/ml/micropipe-torch:0.1.0\n", "cuda", "cuda"),
    ("minio:\n  image:\n    digest: md5:abc\n", "/minio/image/digest", "md5:abc"),
    ("securityContext:\n  runAsUser: 0\n", "/securityContext/runAsUser", "0"),
    ("profiles:\n  cpu: null\n  gpu: null\n", "/profiles", "minProperties"),
    ("profiles:\n  cpu:\n    step_classes:\n      gpu:\n        accelerator_type: nvidia.com/gpu\n",
     "/profiles/cpu/step_classes/gpu", "accelerator_limit"),
    ("profiles:\n  gpu:\n    step_classes:\n      gpu:\n        tolerations:\n"
     "          - {key: nvidia.com/gpu, operator: Exists, value: 'yes', effect: NoSchedule}\n",
     "/profiles/gpu/step_classes/gpu/tolerations/0/value", "yes"),
]


@pytest.mark.parametrize("text,field,bad", BAD_VALUES, ids=[b[1] for b in BAD_VALUES])
def test_values_violating_the_schema_fail_naming_the_field(chart, tmp_path, text, field, bad):
    path = tmp_path / "bad-values.yaml"
    path.write_text(text)
    over = yaml.safe_load(path.read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(merge(default_values(), over)))
    assert errors, text
    where = ["/" + "/".join(map(str, e.absolute_path)) for e in errors]
    assert any(w == field or field in e.message for w, e in zip(where, errors, strict=True)), (where, errors)
    with pytest.raises(helm.HelmValuesError) as info:
        render(chart, over)
    message = str(info.value)
    assert "schema" in message and field.split("/")[-1] in message, message


FAILS = [
    ({"storage": {"existingSecret": "s3", "create": True}}, "storage.existingSecret and storage.create=true"),
    ({"storage": {"existingSecret": "s3", "accessKey": "k"}}, "existingSecret is set together with inline"),
    ({"storage": {"accessKey": "k", "secretKey": "s", "endpoint": "http://x:9000"}}, "storage.create is false"),
    ({"storage": {"create": True, "accessKey": "k"}}, "needs storage.accessKey and storage.secretKey"),
    ({"storage": {"create": True, "accessKey": "k", "secretKey": "s"}}, "needs storage.endpoint"),
    ({"storage": {"secretKeys": {"secretKey": "accesskey"}}}, "three different keys"),
    ({"minio": {"enabled": True}}, "minio.enabled=true needs credentials"),
    ({"minio": {"enabled": True}, "storage": {"create": True, "accessKey": "admin", "secretKey": "short"}},
     "at least 8 characters"),
    ({"minio": {"enabled": True}, "storage": {"create": True, "accessKey": "ab", "secretKey": "long-enough"}},
     "at least 3 characters"),
    ({"upload": {"kfpHost": ""}}, "upload.enabled=true needs upload.kfpHost"),
    ({"upload": {"profile": "tpu"}}, 'upload.profile "tpu" is not a key of profiles; valid: cpu, gpu'),
    ({"upload": {"multiUser": True}, "serviceAccount": {"create": False}}, "needs serviceAccount.name"),
]


@pytest.mark.parametrize("values,message", FAILS, ids=[m for _, m in FAILS])
def test_invalid_combinations_fail_with_a_message(chart, values, message):
    with pytest.raises(helm.HelmRenderError) as info:
        render(chart, values)
    assert message in str(info.value)


def test_upload_disabled_needs_no_host(chart):
    docs = manifests(render(chart, {"upload": {"enabled": False, "kfpHost": ""}}))
    assert not by_kind(docs, "Job")


# ------------------------------------------------------------------------------------------ secrets
def _pods_and_templates(docs):
    return [d for d in docs if d["kind"] not in ("Secret",)]


@pytest.mark.parametrize("minio", [False, True])
def test_secret_values_are_referenced_never_inlined(chart, minio):
    values = {"storage": {"create": True, **DEV_CREDS}, "minio": {"enabled": minio}}
    rendered = render(chart, values)
    docs = manifests(rendered)
    (secret,) = by_kind(docs, "Secret")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data == {"accesskey": DEV_CREDS["accessKey"], "secretkey": DEV_CREDS["secretKey"],
                    "endpoint": DEV_CREDS["endpoint"]}
    needles = [v for v in DEV_CREDS.values()] + [base64.b64encode(v.encode()).decode() for v in DEV_CREDS.values()]
    for path, text in rendered.items():
        if not path.endswith("secret.yaml"):
            assert not any(n in text for n in needles), f"{path} holds a secret value"
    secret_names = {secret["metadata"]["name"]}
    for where, spec in pod_specs(docs):
        for container in spec["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in secret_names | {"kfp-token"}, (where, env)
                else:  # plain values: never one of the storage Secret's
                    assert env["value"] not in DEV_CREDS.values(), (where, env)


def test_existing_secret_is_used_and_not_created(rendered_sets):
    docs = rendered_sets["existing-secret"]
    assert not by_kind(docs, "Secret")
    (cm,) = by_kind(docs, "ConfigMap")
    for text in cm["data"].values():
        assert yaml.safe_load(text)["storage_secret"]["name"] == "team-a-s3"


def test_minio_gets_root_credentials_from_the_secret(rendered_sets):
    (deploy,) = by_kind(rendered_sets["dev-minio"], "Deployment")
    env = {e["name"]: e for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name, key in (("MINIO_ROOT_USER", "accesskey"), ("MINIO_ROOT_PASSWORD", "secretkey")):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "micropipe-s3", "key": key}
    image = deploy["spec"]["template"]["spec"]["containers"][0]["image"]
    assert re.fullmatch(r"quay\.io/minio/minio:RELEASE\.\d{4}-\d\d-\d\dT[\d-]+Z", image), image
    (secret,) = by_kind(rendered_sets["dev-minio"], "Secret")
    endpoint = base64.b64decode(secret["data"]["endpoint"]).decode()
    assert endpoint == f"http://{RELEASE}-micropipe-minio.{NAMESPACE}.svc.cluster.local:9000"


def test_minio_bucket_job_creates_the_buckets(rendered_sets, s3_server, monkeypatch):
    """Runs the bucket Job's command as rendered, against the moto S3 server."""
    (job,) = [d for d in by_kind(rendered_sets["dev-minio"], "Job") if d["metadata"]["name"].endswith("-buckets")]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "-c"] and command[3:] == ["micropipe"]  # bucket of data_root s3://micropipe/...
    bucket = f"chart-{os.getpid()}"
    run = subprocess.run([sys.executable, "-c", command[2], bucket, bucket], capture_output=True, text=True,
                         env={**os.environ, **s3_server.env}, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:2] == [f"{bucket} created", f"{bucket} exists"]
    assert s3_server.client().bucket_exists(bucket)


# ----------------------------------------------------------------------------------------- profiles
def test_configmap_profiles_equal_the_repository_profiles(rendered_sets, tmp_path):
    (cm,) = by_kind(rendered_sets["default"], "ConfigMap")
    repo = {p.stem: p for p in _kfp.PROFILES.glob("*.yaml")}
    assert set(cm["data"]) == {f"{name}.yaml" for name in repo}
    for name, path in repo.items():
        out = tmp_path / f"{name}.yaml"
        out.write_text(cm["data"][f"{name}.yaml"])
        assert yaml.safe_load(out.read_text()) == yaml.safe_load(path.read_text())
        assert _kfp.Profile.load(str(out)) == _kfp.Profile.load(str(path))


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_configmap_profile_loads(rendered_sets, tmp_path, name):
    (cm,) = by_kind(rendered_sets[name], "ConfigMap")
    for file, text in cm["data"].items():
        (tmp_path / file).write_text(text)
        profile = _kfp.Profile.load(str(tmp_path / file))
        assert profile.storage_secret["keys"] == {"accesskey": "AWS_ACCESS_KEY_ID",
                                                  "secretkey": "AWS_SECRET_ACCESS_KEY",
                                                  "endpoint": "MICROPIPE_S3_ENDPOINT"}


def test_values_profiles_need_no_storage_secret(chart):
    with pytest.raises(helm.HelmValuesError, match="storage_secret"):
        render(chart, {"profiles": {"gpu": {"storage_secret": {"name": "x", "keys": {}}}}})


# ----------------------------------------------------------------------------------------- upload
def _upload_job(docs):
    (job,) = [d for d in by_kind(docs, "Job") if d["metadata"]["name"].endswith("-upload")]
    return job


def test_upload_job_is_a_hook_and_its_arguments_parse(chart):
    docs = manifests(render(chart, VALUE_SETS["gpu-multiuser-token"], revision=7))
    job = _upload_job(docs)
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade,post-rollback"
    assert "before-hook-creation" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["micropipe", "upload"]  # the console script of the micropipe image
    args = cli._parser().parse_args(container["command"][1:] + container["args"])
    assert args.func is cli.cmd_upload
    assert (args.profile, args.version, args.pipeline, args.prefix, args.namespace) == \
        ("/profiles/gpu.yaml", "0.1.0-r7", ["cp_surrogate"], "lab ", NAMESPACE)
    assert args.host == "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
    assert container["image"] == f"ghcr.io/micropipe/micropipe-base@sha256:{'a' * 64}"
    (cm,) = by_kind(docs, "ConfigMap")
    assert "gpu.yaml" in cm["data"]
    env = {e["name"]: e for e in container["env"]}
    assert env["KFP_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "kfp-token", "key": "token"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["kfp-token"] == str(Path(_server.TOKEN_FILES[0][1]).parent)  # where the upload looks first
    volume = [v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "kfp-token"][0]
    assert volume["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"


def test_default_upload_image_is_the_app_version(rendered_sets):
    container = _upload_job(rendered_sets["default"])["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"ghcr.io/micropipe/micropipe-base:{micropipe.__version__}"
    assert "--namespace" not in container["args"] and "KFP_TOKEN" not in str(container["env"])
    assert not [e for e in container["env"] if e["name"].endswith("_IMAGE")], "empty componentImages: defaults"


def test_component_images_reach_the_upload_job_as_the_variables_components_read(chart, rendered_sets):
    """componentImages.<name> becomes MICROPIPE_<NAME>_IMAGE in the upload Job, the variable components/__init__.py
    reads when the Job compiles (tests/test_pipelines.py checks that compiling with it changes the step images);
    empty entries set nothing, so the package default applies."""
    container = _upload_job(rendered_sets["gpu-multiuser-token"])["spec"]["template"]["spec"]["containers"][0]
    images = {e["name"]: e["value"] for e in container["env"] if e["name"].endswith("_IMAGE")}
    wanted = VALUE_SETS["gpu-multiuser-token"]["componentImages"]
    assert images == {f"MICROPIPE_{name.upper()}_IMAGE": ref for name, ref in wanted.items()}
    source = (ROOT / "components" / "__init__.py").read_text()
    read = set(re.findall(r'os\.environ\.get\("(MICROPIPE_\w+_IMAGE)"', source))
    assert read == {f"MICROPIPE_{name.upper()}_IMAGE" for name in default_values()["componentImages"]}
    notes = render(chart, VALUE_SETS["gpu-multiuser-token"])[f"{CHART.name}/templates/NOTES.txt"]
    assert f"torch: {wanted['torch']}" in notes and f"base: {wanted['base']}" in notes
    notes = render(chart)[f"{CHART.name}/templates/NOTES.txt"]
    assert f"torch: ghcr.io/micropipe/micropipe-torch:{micropipe.__version__}" in notes


# ----------------------------------------------------------------------------- least privilege, pods
@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_pods_are_non_root_read_only_and_bounded(rendered_sets, name):
    specs = pod_specs(rendered_sets[name])
    assert specs
    for where, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] >= 10000, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True and sc["privileged"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (where, kind)


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_service_account_has_least_privilege(rendered_sets, name):
    docs = rendered_sets[name]
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    (sa,) = by_kind(docs, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    roles = by_kind(docs, "Role")
    multi_user = merge(default_values(), VALUE_SETS[name])["upload"]["multiUser"]
    assert len(roles) == (1 if multi_user else 0)
    for role in roles:
        assert role["rules"] == [{"apiGroups": ["pipelines.kubeflow.org"],
                                  "resources": ["pipelines", "pipelines/versions"],
                                  "verbs": ["get", "list", "create"]}]
        (binding,) = by_kind(docs, "RoleBinding")
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                        "namespace": NAMESPACE}]


def test_every_pod_is_covered_by_a_network_policy(rendered_sets):
    docs = rendered_sets["dev-minio"]
    policies = by_kind(docs, "NetworkPolicy")

    def selects(policy, labels):
        sel = policy["spec"]["podSelector"]
        ok = all(labels.get(k) == v for k, v in sel.get("matchLabels", {}).items())
        return ok and all(labels.get(e["key"]) in e["values"] for e in sel.get("matchExpressions", []))

    for d in docs:
        if d["kind"] in ("Job", "Deployment"):
            labels = d["spec"]["template"]["metadata"]["labels"]
            assert any(selects(p, labels) for p in policies), d["metadata"]["name"]


# ------------------------------------------------------------------------------------ documentation
def test_values_yaml_is_documented_key_by_key():
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented, parents = [], []  # parents: (indent, key) of the enclosing mappings
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if not m:
            continue
        indent = len(m.group(1))
        parents = [(n, k) for n, k in parents if n < indent]
        parent = parents[-1][1] if parents else None
        parents.append((indent, m.group(2)))
        # Deeper keys, and requests/limits of a documented `resources`, belong to a documented block.
        if indent > 4 or parent == "resources":
            continue
        previous = lines[i - 1].strip() if i else ""
        if not (previous.startswith("#") or "#" in line.split(":", 1)[1]):
            undocumented.append(line.strip())
    assert not undocumented, undocumented


def test_notes_render_for_every_value_set(chart):
    for name, values in VALUE_SETS.items():
        notes = render(chart, values)[f"{CHART.name}/templates/NOTES.txt"]
        assert f"{RELEASE}-micropipe-profiles" in notes, name


# -------------------------------------------------------------------------------- security scanning
def _checkov_results(*dirs: Path) -> list[dict[str, Any]]:
    if not CHECKOV.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"checkov not found at {CHECKOV}; `make test` installs it with `make scan-venv`")
        pytest.skip(f"checkov not found at {CHECKOV}; run `make scan-venv` (or set MICROPIPE_CHECKOV)")
    cmd = [str(CHECKOV), "--config-file", str(ROOT / ".checkov.yaml"), "--output", "json"]
    for d in dirs:
        cmd += ["-d", str(d)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"})
    # One JSON document per framework, printed one after the other.
    decoder, text, results = json.JSONDecoder(), run.stdout.strip(), []
    while text:
        doc, end = decoder.raw_decode(text)
        results += doc if isinstance(doc, list) else [doc]
        text = text[end:].strip()
    assert results, f"checkov printed no results (exit {run.returncode}): {run.stderr[-2000:]}"
    return results


def test_checkov_finds_nothing_in_rendered_manifests_and_dockerfiles(chart, tmp_path):
    for name, values in VALUE_SETS.items():
        docs = [text for path, text in sorted(render(chart, values).items()) if not path.endswith("NOTES.txt")]
        (tmp_path / f"{name}.yaml").write_text("\n---\n".join(t for t in docs if t.strip()))
    dockerfiles = sorted((ROOT / "images").glob("*/Dockerfile"))
    results = _checkov_results(tmp_path, *([ROOT / "images"] if dockerfiles else []))
    types = {r.get("check_type") for r in results}
    assert "kubernetes" in types and ("dockerfile" in types or not dockerfiles), types
    failed = [f"{c['check_id']} {c['check_name']} -- {c['resource']} ({c.get('file_path')})"
              for r in results for c in r.get("results", {}).get("failed_checks", [])]
    assert not failed, "\n".join(failed)
    k8s = [r for r in results if r.get("check_type") == "kubernetes"][0]
    assert k8s["summary"]["passed"] > 100 and k8s["summary"]["parsing_errors"] == 0


def test_checkov_skips_are_each_justified():
    text = (ROOT / ".checkov.yaml").read_text()
    config = yaml.safe_load(text)
    lines = text.splitlines()
    for check in config["skip-check"]:
        i = next(n for n, line in enumerate(lines) if line.strip() == f"- {check}")
        comment = []
        while i > 0 and lines[i - 1].strip().startswith("#"):
            i -= 1
            comment.append(lines[i])
        assert len(" ".join(comment)) > 80, f"{check} is skipped without a justification"


def test_dockerfile_base_images_resolve_to_pinned_tags():
    """What CKV_DOCKER_7 cannot see through `FROM ${ARG}`: every base image has an explicit, non-latest tag."""
    dockerfiles = sorted((ROOT / "images").glob("*/Dockerfile"))
    if not dockerfiles:
        pytest.skip("no Dockerfiles under images/")
    for path in dockerfiles:
        args: dict[str, str] = {}
        stages: set[str] = set()

        def resolve(ref: str, args: dict[str, str] = args) -> str:
            return re.sub(r"\$\{?(\w+)\}?", lambda a: args.get(a.group(1), a.group(0)), ref)

        for line in path.read_text().splitlines():
            if m := re.match(r"^ARG\s+(\w+)=(\S+)", line):
                args[m.group(1)] = m.group(2)
            elif m := re.match(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE):
                image = resolve(m.group(1))
                if m.group(2):
                    stages.add(m.group(2))
                if image in stages or image == "scratch":
                    continue
                assert "$" not in image, f"{path}: FROM {m.group(1)} has no ARG default"
                name = image.split("@")[0].rsplit("/", 1)[-1]
                assert "@sha256:" in image or (":" in name and not name.endswith(":latest")), \
                    f"{path}: base image {image} is not pinned to a version tag"
