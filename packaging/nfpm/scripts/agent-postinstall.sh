#!/bin/sh
# sendense-agent, after its files are installed: the deb postinst (configure [old-version]) and
# the rpm %post (1: install, 2 or more: upgrade). Makes systemd read the unit; after a deb
# upgrade restarts a running agent (rpm does that in %postun, once the old files are gone).
# Nothing is enabled or started on a first install: the agent must be enrolled and given a
# source first.
set -e

unit=sendense-agent.service

next_steps() {
	echo "sendense-agent: enroll as the service user (sudo -u sendense-agent sendense-agent enroll --config /etc/sendense/agent.yaml --token-file -, then paste the token), add a source to /etc/sendense/agent.yaml, then: systemctl enable --now $unit"
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
