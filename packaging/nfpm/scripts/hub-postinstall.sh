#!/bin/sh
# sendense-hub, after its files are installed: the deb postinst (configure [old-version]) and
# the rpm %post (1: install, 2 or more: upgrade). Makes systemd read the unit; after a deb
# upgrade restarts a running hub (rpm does that in %postun, once the old files are gone).
# Nothing is enabled or started on a first install: the operator reviews hub.yaml first.
set -e

unit=sendense-hub.service

next_steps() {
	echo "sendense-hub: review /etc/sendense/hub.yaml, then: systemctl enable --now $unit"
}

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
case "$1" in
configure)
	if [ -n "$2" ]; then
		if [ -d /run/systemd/system ]; then
			systemctl try-restart "$unit" || true
		fi
	else
		next_steps
	fi
	;;
1)
	next_steps
	;;
esac
exit 0
