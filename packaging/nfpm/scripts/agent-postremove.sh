#!/bin/sh
# sendense-agent, after its files are removed: the deb postrm (remove|purge|upgrade|...) and the
# rpm %postun (0: removal, 1 or more: upgrade). Makes systemd forget the unit; after an rpm
# upgrade restarts a running agent (which first removes the snapshots of running jobs). The user
# "sendense-agent" and /var/lib/sendense-agent (the enrolled identity and its private key) are
# never removed, not even on purge: delete them by hand if that is really meant.
set -e

unit=sendense-agent.service

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	case "$1" in
	[1-9]*)
		systemctl try-restart "$unit" || true
		;;
	esac
fi
exit 0
