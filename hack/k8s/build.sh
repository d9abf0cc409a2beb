#!/usr/bin/env bash
# Builds the local control plane from Go modules into k8s-bin/ (git-ignored): etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok and helm; and, only
# when named, KubeRay's operator (kuberay-operator, for the opt-in KubeRay e2e test).
#
# Versions are pinned by the wrapper modules' go.mod/go.sum beside this script; the build is
# skipped while a stamp of those files (and of this script) matches the one left by the last
# successful build (KubeRay has a stamp of its own module, so changing it rebuilds nothing else). Go's own build and module caches (in $HOME) make a rebuild after a version
# change incremental. Knobs: K8S_BIN_DIR (output), K8S_BUILD_JOBS (parallel compiles, default 2).
# Arguments name the binaries to build (default: all), e.g. `build.sh helm`.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${K8S_BIN_DIR:-$here/../../k8s-bin}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

default_binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm)
all_binaries=("${default_binaries[@]}" kuberay-operator)
binaries=("${@:-${default_binaries[@]}}")
modules_stamp() { cat "${@/#/$here/}" "$0" | sha256sum | cut -d' ' -f1; }
stamp="$(modules_stamp {etcd,helm,kube,kwok}/go.mod {etcd,helm,kube,kwok}/go.sum)"
kuberay_stamp="$(modules_stamp kuberay/go.mod kuberay/go.sum)"
stamp_of() { if [[ "$1" == kuberay-operator ]]; then echo "$kuberay_stamp"; else echo "$stamp"; fi; }

up_to_date() { # up_to_date BINARY: built by this very script from these very modules
  [[ -x "$out/$1" && "$(cat "$out/.stamp-$1" 2>/dev/null)" == "$(stamp_of "$1")" ]]
}
pending=()
for b in "${binaries[@]}"; do
  [[ " ${all_binaries[*]} " == *" $b "* ]] || { echo "k8s-bin: no binary named $b (${all_binaries[*]})" >&2; exit 2; }
  up_to_date "$b" || pending+=("$b")
done
if [[ ${#pending[@]} -eq 0 ]]; then
  echo "k8s-bin: up to date in $out"
  exit 0
fi

module_version() { # module_version DIR MODULE -> the version DIR's go.mod pins MODULE at
  (cd "$here/$1" && go list -m -f '{{.Version}}' "$2")
}
k8s_version="$(module_version kube k8s.io/kubernetes)"
etcd_version="$(module_version etcd go.etcd.io/etcd/server/v3)"
kwok_version="$(module_version kwok sigs.k8s.io/kwok)"
helm_version="$(module_version helm helm.sh/helm/v3)"
kuberay_version="$(module_version kuberay github.com/ray-project/kuberay/ray-operator)"
major_minor="${k8s_version#v}"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

stamp_flags() { # stamp_flags PACKAGE_PATH VERSION: -X flags for a gitVersion-style version package
  local pkg="$1" version="$2" mm="${2#v}"
  echo "-X $pkg.gitVersion=$version -X $pkg.gitMajor=${mm%%.*} -X $pkg.gitMinor=$(echo "$mm" | cut -d. -f2)" \
       "-X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
}
k8s_ldflags="-s -w $(stamp_flags k8s.io/component-base/version "$k8s_version") $(stamp_flags k8s.io/client-go/pkg/version "$k8s_version")"

export GOFLAGS="-p=${K8S_BUILD_JOBS:-2} -trimpath -buildvcs=false"
export CGO_ENABLED=0

# Helm stamps the Kubernetes version it lints and renders for from its client-go (v0.X.Y is 1.X).
helm_k8s="$(module_version helm k8s.io/client-go)"
helm_k8s_minor="$(echo "${helm_k8s#v}" | cut -d. -f2)"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version \
  -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$helm_k8s_minor"
done

build() { # build MODULE_DIR OUTPUT_NAME PACKAGE LDFLAGS, unless OUTPUT_NAME is up to date or not asked for
  [[ " ${pending[*]} " == *" $2 "* ]] || return 0
  echo "k8s-bin: building $2 ($3)"
  (cd "$here/$1" && nice go build -ldflags "$4" -o "$out/$2.tmp" "$3")
  mv "$out/$2.tmp" "$out/$2"
  stamp_of "$2" > "$out/.stamp-$2"
}

echo "k8s-bin: kubernetes $k8s_version, etcd $etcd_version, kwok $kwok_version, helm $helm_version," \
  "kuberay $kuberay_version -> $out"
build etcd etcd go.etcd.io/etcd/server/v3 "-s -w"
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  build kube "$cmd" "k8s.io/kubernetes/cmd/$cmd" "$k8s_ldflags"
done
build kwok kwok sigs.k8s.io/kwok/cmd/kwok "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$kwok_version"
build helm helm helm.sh/helm/v3/cmd/helm "$helm_ldflags"
build kuberay kuberay-operator github.com/ray-project/kuberay/ray-operator "-s -w"

echo "k8s-bin: done ($major_minor; built ${pending[*]})"
