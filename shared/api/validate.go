package api

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxNameLen bounds names and other free-text identifiers in requests (VARCHAR(255) columns).
const MaxNameLen = 255

// Validate checks an inventory before anything is applied. The error is a *FieldError naming the
// first bad field, e.g. "vms[3].disks[0].capacity_bytes".
func (inv *Inventory) Validate() error {
	if err := checkName("source.name", inv.Source.Name, true); err != nil {
		return err
	}
	if strings.ContainsAny(inv.Source.Name, " /\t\n") || len(inv.Source.Name) > 128 {
		return &FieldError{"source.name", "must not contain spaces or slashes and be at most 128 characters"}
	}
	if len(inv.Source.URL) > 1024 {
		return &FieldError{"source.url", "longer than 1024 characters"}
	}
	for _, f := range []struct{ name, v string }{{"source.api_type", inv.Source.APIType}, {"source.version", inv.Source.Version}, {"source.instance_uuid", inv.Source.InstanceUUID}} {
		if err := checkName(f.name, f.v, false); err != nil {
			return err
		}
	}
	seenVM := make(map[string]int, len(inv.VMs))
	for i := range inv.VMs {
		vm := &inv.VMs[i]
		p := fmt.Sprintf("vms[%d]", i)
		if err := checkName(p+".instance_uuid", vm.InstanceUUID, true); err != nil {
			return err
		}
		if j, dup := seenVM[vm.InstanceUUID]; dup {
			return &FieldError{p + ".instance_uuid", fmt.Sprintf("duplicate of vms[%d]", j)}
		}
		seenVM[vm.InstanceUUID] = i
		if err := checkName(p+".name", vm.Name, true); err != nil {
			return err
		}
		for _, f := range []struct{ name, v string }{
			{".bios_uuid", vm.BIOSUUID}, {".moref", vm.MoRef}, {".power_state", vm.PowerState}, {".guest_os", vm.GuestOS},
			{".datacenter", vm.Datacenter}, {".cluster", vm.Cluster}, {".host", vm.Host},
		} {
			if err := checkName(p+f.name, f.v, false); err != nil {
				return err
			}
		}
		if len(vm.Folder) > 1024 {
			return &FieldError{p + ".folder", "longer than 1024 characters"}
		}
		if vm.NumCPU < 0 {
			return &FieldError{p + ".num_cpu", "must not be negative"}
		}
		if vm.MemoryMB < 0 {
			return &FieldError{p + ".memory_mb", "must not be negative"}
		}
		seenKey := make(map[int32]int, len(vm.Disks))
		for j := range vm.Disks {
			d := &vm.Disks[j]
			dp := fmt.Sprintf("%s.disks[%d]", p, j)
			if k, dup := seenKey[d.Key]; dup {
				return &FieldError{dp + ".key", fmt.Sprintf("duplicate device key %d (also disks[%d])", d.Key, k)}
			}
			seenKey[d.Key] = j
			if d.DiskID != DiskIDForKey(d.Key) {
				return &FieldError{dp + ".disk_id", fmt.Sprintf("must be %q for key %d", DiskIDForKey(d.Key), d.Key)}
			}
			if d.CapacityBytes < 0 {
				return &FieldError{dp + ".capacity_bytes", "must not be negative"}
			}
			for _, f := range []struct{ name, v string }{
				{".label", d.Label}, {".datastore", d.Datastore}, {".backing_type", d.BackingType}, {".provisioning", d.Provisioning},
				{".controller_type", d.ControllerType}, {".disk_mode", d.DiskMode}, {".not_backupable_reason", d.NotBackupableReason}, {".change_id", d.ChangeID},
			} {
				if err := checkName(dp+f.name, f.v, false); err != nil {
					return err
				}
			}
			if len(d.BackingFile) > 1024 {
				return &FieldError{dp + ".backing_file", "longer than 1024 characters"}
			}
		}
	}
	return nil
}

func checkName(field, v string, required bool) error {
	switch {
	case required && strings.TrimSpace(v) == "":
		return &FieldError{field, "must not be empty"}
	case len(v) > MaxNameLen:
		return &FieldError{field, fmt.Sprintf("longer than %d characters", MaxNameLen)}
	case !utf8.ValidString(v):
		return &FieldError{field, "not valid UTF-8"}
	case strings.ContainsRune(v, 0):
		return &FieldError{field, "contains a NUL character"}
	}
	return nil
}
