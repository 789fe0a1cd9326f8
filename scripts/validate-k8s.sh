#!/usr/bin/env bash
# Validates the Kubernetes manifests offline (no API server needed):
#   1. yamllint --strict over every YAML file under k8s/ (k8s/.yamllint);
#   2. `kubectl kustomize` renders every kustomization under k8s/ (the base, each
#      overlay, the storage classes);
#   3. kubernetes-validate --strict checks every render against the schemas of
#      Kubernetes $KUBE_VERSION (bundled with the tool);
#   4. checkov --framework kubernetes over all renders; a finding fails unless the
#      object suppresses it with a checkov.io/skipN annotation that gives the reason
#      (checkov ignores comments in Kubernetes manifests);
#   5. k8s/check_consistency.py: cross-object checks of each render (selectors match
#      pod labels, serviceName is the headless Service, named ports exist, peers and
#      NodePorts match the replicas, ...);
#   6. `sh -n` on deploy/entrypoint.sh (the container entrypoint and hooks).
# Every step runs even when an earlier one failed; the exit code is 1 if any failed,
# and each failure line names its validator in brackets, e.g. "FAIL [checkov] ...".
#
# Usage: scripts/validate-k8s.sh [--install-only] [K8S_DIR]
#   K8S_DIR defaults to the repository's k8s/ (tests pass a broken copy).
# Tools: kubernetes-validate, yamllint and checkov are pip-installed once into their own
# virtualenv ($STRAND_K8S_TOOLS, default ~/.cache/strand-k8s-tools: checkov pins old
# versions of common packages, which would break pytest in the main environment);
# kubectl comes from Debian's kubernetes-client package when missing ($KUBECTL picks
# another). kustomize v5+ (kubectl 1.27+) is required.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
TOOLS=${STRAND_K8S_TOOLS:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/strand-k8s-tools}
KUBE_VERSION=${KUBE_VERSION:-1.37.0}
KUBECTL=${KUBECTL:-kubectl}
# Pinned, so that a new release (new checkov checks, new schemas) changes CI only when
# this line does.
PIP_PACKAGES=(kubernetes-validate==1.37.0 yamllint==1.38.0 checkov==3.3.30)

install_only=0
if [ "${1:-}" = "--install-only" ]; then
  install_only=1
  shift
fi
K8S_DIR=$(cd "${1:-$REPO/k8s}" && pwd) || { echo "validate-k8s: no such directory: ${1:-}" >&2; exit 2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

tools_ok() {
  [ "$(cat "$TOOLS/.strand-packages" 2>/dev/null)" = "${PIP_PACKAGES[*]}" ] &&
    [ -x "$TOOLS/bin/kubernetes-validate" ] && [ -x "$TOOLS/bin/yamllint" ] && [ -x "$TOOLS/bin/checkov" ] &&
    "$TOOLS/bin/python" -c "import yaml, kubernetes_validate, yamllint, checkov" 2>/dev/null
}

ensure_tools() {
  if ! tools_ok; then
    echo "validate-k8s: installing ${PIP_PACKAGES[*]} into $TOOLS (pip, once)" >&2
    if ! "$PYTHON" -m venv --clear "$TOOLS" 2>/dev/null; then
      # Debian's own python3 has venv in a separate package.
      as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$PYTHON" -m venv --clear "$TOOLS" || { echo "validate-k8s: cannot create a virtualenv at $TOOLS" >&2; return 1; }
    fi
    "$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}" ||
      { echo "validate-k8s: pip install ${PIP_PACKAGES[*]} failed" >&2; return 1; }
    echo "${PIP_PACKAGES[*]}" >"$TOOLS/.strand-packages"
  fi
  if ! command -v "$KUBECTL" >/dev/null; then
    echo "validate-k8s: installing kubectl (apt: kubernetes-client)" >&2
    if ! { as_root apt-get update -qq &&
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null; }; then
      echo "validate-k8s: apt-get install kubernetes-client failed" >&2
      return 1
    fi
  fi
  # The manifests use kustomize v5 syntax (patches, configurations); kubectl embeds
  # kustomize since 1.14, v5 since 1.27.
  local kv
  kv=$("$KUBECTL" version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p')
  if [ -z "$kv" ] || [ "$kv" -lt 5 ]; then
    echo "validate-k8s: $("$KUBECTL" version --client 2>&1 | head -1) embeds kustomize ${kv:+v$kv}${kv:-older than v4}:" \
      "these manifests need kustomize v5 (kubectl 1.27 or later; Debian 12's kubernetes-client is 1.20)." \
      "Install a newer kubectl, or point KUBECTL at one." >&2
    return 1
  fi
}

if ! ensure_tools; then
  echo "FAIL [setup] the validation tools are not available" >&2
  exit 1
fi
[ "$install_only" = 1 ] && exit 0

RENDERS=$(mktemp -d)
REPORTS=$(mktemp -d)
checkov_pid=""
cleanup() {
  if [ -n "$checkov_pid" ]; then kill "$checkov_pid" 2>/dev/null; fi
  rm -rf "$RENDERS" "$REPORTS"
}
trap cleanup EXIT
failed=()
fail() { # STEP WHAT
  echo "FAIL [$1] $2"
  failed+=("$1: $2")
}
step() {
  echo "== $*"
}
started=$(date +%s)

# 1. yamllint over the sources (base, overlays, storage, monitoring).
step "yamllint --strict $K8S_DIR"
if ! "$TOOLS/bin/yamllint" --strict --format parsable -c "$REPO/k8s/.yamllint" "$K8S_DIR"; then
  fail yamllint "$K8S_DIR"
fi

# 2. Render every kustomization.
mapfile -t KUSTOMIZATIONS < <(cd "$K8S_DIR" && find . -name kustomization.yaml -printf '%h\n' | sed 's|^\./||' | sort)
if [ "${#KUSTOMIZATIONS[@]}" -eq 0 ]; then
  fail kustomize "no kustomization.yaml under $K8S_DIR"
fi
rendered=()
for dir in "${KUSTOMIZATIONS[@]}"; do
  out="$RENDERS/$(echo "$dir" | tr / _).yaml"
  step "kubectl kustomize $dir"
  if "$KUBECTL" kustomize "$K8S_DIR/$dir" >"$out"; then
    rendered+=("$out")
  else
    fail kustomize "$dir does not render"
    rm -f "$out"
  fi
done

# 4 (started first, it takes longest). checkov over all renders at once, in the
# background while steps 3 and 5 run; its report is printed in order below.
if [ "${#rendered[@]}" -gt 0 ]; then
  BC_SKIP_MAPPING=TRUE "$TOOLS/bin/checkov" --directory "$RENDERS" --framework kubernetes \
    --skip-download --quiet --compact >"$REPORTS/checkov.out" 2>&1 &
  checkov_pid=$!
fi

# 3. Schemas of the target Kubernetes version, strictly (unknown fields are errors).
for out in "${rendered[@]}"; do
  name=$(basename "$out" .yaml | tr _ /)
  step "kubernetes-validate --strict -k $KUBE_VERSION ($name)"
  if ! "$TOOLS/bin/kubernetes-validate" --strict --quiet -k "$KUBE_VERSION" "$out"; then
    fail kubernetes-validate "$name"
  fi
done

# 5. Cross-object consistency, one render at a time.
for out in "${rendered[@]}"; do
  name=$(basename "$out" .yaml | tr _ /)
  step "consistency ($name)"
  if ! "$TOOLS/bin/python" "$REPO/k8s/check_consistency.py" "$out" | sed "s|$RENDERS/[^:]*|$name|"; then
    fail consistency "$name"
  fi
done

# 4. checkov's report.
if [ -n "$checkov_pid" ]; then
  step "checkov --framework kubernetes ($(basename -a "${rendered[@]}" | tr '\n' ' '))"
  wait "$checkov_pid"
  checkov_status=$?
  checkov_pid=""
  cat "$REPORTS/checkov.out"
  if [ "$checkov_status" -ne 0 ]; then
    fail checkov "findings in the rendered manifests (fix them, or suppress with a reasoned checkov.io/skipN annotation)"
  fi
fi

# 6. The entrypoint the manifests run.
step "sh -n deploy/entrypoint.sh"
if ! sh -n "$REPO/deploy/entrypoint.sh"; then
  fail sh "deploy/entrypoint.sh has a syntax error"
fi

elapsed=$(($(date +%s) - started))
if [ "${#failed[@]}" -gt 0 ]; then
  echo "validate-k8s: FAILED (${elapsed}s):"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
echo "validate-k8s: OK: ${#rendered[@]} renders of $K8S_DIR pass yamllint, kubernetes-validate $KUBE_VERSION, checkov and the consistency checks (${elapsed}s)"
