// Package packagetest tests the .deb and .rpm packages that scripts/package.sh (`make package`)
// builds from packaging/: their metadata, files, modes and maintainer scripts; the systemd units
// (systemd-analyze); that the packaged default configurations are complete and accepted by the
// packaged binaries; and, as root, a real installation, upgrade and removal with dpkg and rpm in a
// throwaway copy-on-write root (an overlay of / in a private mount namespace), where the installed
// hub runs as its service user. It holds no code besides its tests.
package packagetest
