#!/usr/bin/env bash
# Builds the sendense-hub and sendense-agent .deb and .rpm packages (`make package`).
#
#   scripts/package.sh [--out DIR]          packages into DIR (default: dist/)
#   scripts/package.sh --print-version      prints the package version for VERSION, builds nothing
#
# Environment: VERSION and COMMIT (default: computed from git as the Makefile does), GOARCH
# (default: the host's). The binaries are built with the Makefile's LDFLAGS, so `version` prints
# VERSION. The package version is derived from VERSION (see pkg_version below). nfpm is installed
# into .tools/ at a pinned version when missing. As root on a Debian-like system, the tools the
# package test uses (systemd-analyze, rpm) are installed with apt when missing.
set -euo pipefail

NFPM_VERSION=v2.45.2

caller=$PWD
cd "$(dirname "$0")/.."
root=$PWD

die() {
	echo "package.sh: $*" >&2
	exit 1
}

out=dist
print_version=""
while [ $# -gt 0 ]; do
	case "$1" in
	--out)
		[ $# -ge 2 ] || die "--out needs a directory"
		out=$2
		shift 2
		;;
	--out=*)
		out=${1#--out=}
		shift
		;;
	--print-version)
		print_version=1
		shift
		;;
	-h | --help)
		sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
		exit 0
		;;
	*) die "unknown argument $1 (usage: scripts/package.sh [--out DIR] | --print-version)" ;;
	esac
done
case "$out" in
/*) ;;
*) out=$caller/$out ;;
esac

VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
COMMIT=${COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || true)}
# pkg_version turns a `git describe` result into a version dpkg and rpm order correctly:
#   v1.2.3 → 1.2.3; v1.2.3-4-gabcdef0[-dirty] → 1.2.3+git4.abcdef0[.dirty] (after 1.2.3);
#   an untagged commit abcdef0[-dirty] → 0.0.0+git<commits>.abcdef0[.dirty];
#   anything else not starting with a digit (e.g. dev) → 0.0.0+<it, as letters, digits, dots>.
# nfpm turns a semver prerelease (1.3.0-rc.1) into ~rc.1, which sorts before 1.3.0.
pkg_version() {
	local v=${1#v} dirty="" base="" meta=""
	if [[ $v == *-dirty ]]; then
		dirty=.dirty
		v=${v%-dirty}
	fi
	if [[ $v =~ ^(.+)-([0-9]+)-g([0-9a-f]+)$ ]]; then
		base=${BASH_REMATCH[1]}
		meta=git${BASH_REMATCH[2]}.${BASH_REMATCH[3]}
	elif [[ $v =~ ^[0-9a-f]{4,40}$ ]] && git rev-parse -q --verify "$v^{commit}" >/dev/null 2>&1; then
		base=0.0.0
		meta=git$(git rev-list --count "$v").$v
	elif [[ $v =~ ^[0-9] ]]; then
		base=$v
	else
		base=0.0.0
		meta=$(printf '%s' "$v" | tr -c 'A-Za-z0-9.' '.')
	fi
	meta=$meta$dirty
	meta=${meta#.}
	if [ -n "$meta" ]; then
		printf '%s+%s\n' "$base" "$meta"
	else
		printf '%s\n' "$base"
	fi
}
pkgver=$(pkg_version "$VERSION")
[[ $pkgver =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "VERSION $VERSION gives package version $pkgver, which dpkg would refuse"
if [ -n "$print_version" ]; then
	printf '%s\n' "$pkgver"
	exit 0
fi

command -v go >/dev/null 2>&1 || die "go is not installed (Go 1.26 from https://go.dev/dl/)"
command -v make >/dev/null 2>&1 || die "make is not installed (apt-get install make)"
arch=${GOARCH:-$(go env GOARCH)}

# Tools that inspect and verify the packages; only root may install them, and only with apt.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	need=()
	command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
	command -v rpm >/dev/null 2>&1 || need+=(rpm)
	command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
	if [ ${#need[@]} -gt 0 ]; then
		echo "package.sh: installing ${need[*]} with apt" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	fi
fi

nfpm=$root/.tools/nfpm
# `go version -m` names the module version a binary was built from; reinstall on any mismatch.
if ! go version -m "$nfpm" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+github.com/goreleaser/nfpm/v2[[:space:]]+$NFPM_VERSION[[:space:]]"; then
	echo "package.sh: installing nfpm $NFPM_VERSION into .tools/" >&2
	mkdir -p "$root/.tools"
	GOBIN=$root/.tools GOFLAGS= go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"
fi

# The Makefile's LDFLAGS, printed by make itself so that the two can never drift apart.
ldflags=$(make -s --no-print-directory -C "$root" \
	--eval 'sendense-print-ldflags: ; @printf "%s\n" "$(LDFLAGS)"' \
	sendense-print-ldflags VERSION="$VERSION" COMMIT="$COMMIT")

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

echo "package.sh: building sendense-hub and sendense-agent $VERSION for linux/$arch" >&2
(cd hub && CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags "$ldflags" -o "$stage/sendense-hub" ./cmd/sendense-hub)
(cd agent && CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags "$ldflags" -o "$stage/sendense-agent" ./cmd/sendense-agent)

mkdir -p "$out"
rm -f "$out"/sendense-hub_*.deb "$out"/sendense-hub-*.rpm "$out"/sendense-agent_*.deb "$out"/sendense-agent-*.rpm

# Read by the recipes in packaging/nfpm/. SOURCE_DATE_EPOCH makes the packages reproducible.
export SENDENSE_PKG_VERSION=$pkgver SENDENSE_PKG_ARCH=$arch SENDENSE_PKG_BIN=$stage
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
for name in sendense-hub sendense-agent; do
	for format in deb rpm; do
		"$nfpm" package --config "packaging/nfpm/$name.yaml" --packager "$format" --target "$out/" >/dev/null ||
			die "nfpm could not build the $format package of $name"
	done
done

echo "package.sh: version $pkgver (binaries report $VERSION) in $out:" >&2
(cd "$out" && ls -1 sendense-hub_*.deb sendense-hub-*.rpm sendense-agent_*.deb sendense-agent-*.rpm)
