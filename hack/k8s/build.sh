#!/usr/bin/env bash
# Builds the local control plane from Go modules into k8s-bin/ (git-ignored): etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and kwok.
#
# Versions are pinned by the wrapper modules' go.mod/go.sum beside this script; the build is
# skipped while a stamp of those files (and of this script) matches the one left by the last
# successful build. Go's own build and module caches (in $HOME) make a rebuild after a version
# change incremental. Knobs: K8S_BIN_DIR (output), K8S_BUILD_JOBS (parallel compiles, default 2).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${K8S_BIN_DIR:-$here/../../k8s-bin}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)
stamp="$(cat "$here"/*/go.mod "$here"/*/go.sum "$0" | sha256sum | cut -d' ' -f1)"

all_present() {
  local b
  for b in "${binaries[@]}"; do [[ -x "$out/$b" ]] || return 1; done
}
if all_present && [[ "$(cat "$out/.stamp" 2>/dev/null)" == "$stamp" ]]; then
  echo "k8s-bin: up to date in $out"
  exit 0
fi

module_version() { # module_version DIR MODULE -> the version DIR's go.mod pins MODULE at
  (cd "$here/$1" && go list -m -f '{{.Version}}' "$2")
}
k8s_version="$(module_version kube k8s.io/kubernetes)"
etcd_version="$(module_version etcd go.etcd.io/etcd/server/v3)"
kwok_version="$(module_version kwok sigs.k8s.io/kwok)"
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

build() { # build MODULE_DIR OUTPUT_NAME PACKAGE LDFLAGS
  echo "k8s-bin: building $2 ($3)"
  (cd "$here/$1" && nice go build -ldflags "$4" -o "$out/$2.tmp" "$3")
  mv "$out/$2.tmp" "$out/$2"
}

echo "k8s-bin: kubernetes $k8s_version, etcd $etcd_version, kwok $kwok_version -> $out"
build etcd etcd go.etcd.io/etcd/server/v3 "-s -w"
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  build kube "$cmd" "k8s.io/kubernetes/cmd/$cmd" "$k8s_ldflags"
done
build kwok kwok sigs.k8s.io/kwok/cmd/kwok "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$kwok_version"

echo "$stamp" > "$out/.stamp"
echo "k8s-bin: done ($major_minor)"
