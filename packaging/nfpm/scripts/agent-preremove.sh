#!/bin/sh
# sendense-agent, before its files are removed: the deb prerm (remove|upgrade|deconfigure|
# failed-upgrade) and the rpm %preun (0: removal, 1 or more: upgrade). On removal stops the agent
# and disables its unit; upgrades restart it later instead (see postinstall and postremove).
set -e

unit=sendense-agent.service

case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl stop "$unit" || true
	fi
	if command -v systemctl >/dev/null 2>&1; then
		systemctl --no-reload disable "$unit" >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0
