#!/bin/sh
# sendense-hub, before its files are unpacked: the deb preinst (install|upgrade|abort-upgrade)
# and the rpm %pre (1: install, 2 or more: upgrade). Creates the system user and group
# "sendense" first, so that the owner of /var/lib/sendense and the group of
# /etc/sendense/hub.yaml resolve when the files are unpacked. An existing user is left alone.
set -e

user=sendense
home=/var/lib/sendense

case "$1" in
[0-9]*)
	getent group "$user" >/dev/null || groupadd --system "$user"
	getent passwd "$user" >/dev/null ||
		useradd --system --gid "$user" --home-dir "$home" --no-create-home \
			--shell /sbin/nologin --comment "Sendense hub" "$user"
	;;
install | upgrade)
	if ! getent passwd "$user" >/dev/null; then
		if getent group "$user" >/dev/null; then
			adduser --system --ingroup "$user" --home "$home" --no-create-home --quiet "$user"
		else
			adduser --system --group --home "$home" --no-create-home --quiet "$user"
		fi
	fi
	;;
esac
exit 0
