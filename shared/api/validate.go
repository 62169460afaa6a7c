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
	if err := checkText("source.url", inv.Source.URL, false, 1024); err != nil {
		return err
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
		if err := checkText(p+".folder", vm.Folder, false, 1024); err != nil {
			return err
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
			if err := checkName(dp+".disk_id", d.DiskID, false); err != nil {
				return err
			}
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
			if err := checkText(dp+".backing_file", d.BackingFile, false, 1024); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkName checks a free-text field of at most MaxNameLen bytes.
func checkName(field, v string, required bool) error {
	return checkText(field, v, required, MaxNameLen)
}

// checkText checks a free-text field of at most max bytes: valid UTF-8 without control or bidi
// characters (see UnsafeRune), so that nothing an agent sends can move a terminal's cursor,
// start an escape sequence or reorder what an operator reads.
func checkText(field, v string, required bool, max int) error {
	switch {
	case required && strings.TrimSpace(v) == "":
		return &FieldError{field, "must not be empty"}
	case len(v) > max:
		return &FieldError{field, fmt.Sprintf("longer than %d characters", max)}
	case !utf8.ValidString(v):
		return &FieldError{field, "not valid UTF-8"}
	}
	for _, r := range v {
		if UnsafeRune(r) {
			return &FieldError{field, fmt.Sprintf("contains the control or bidi character %U", r)}
		}
	}
	return nil
}

// UnsafeRune reports whether r is a control character (C0, DEL, C1) or a Unicode bidi control
// (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069): characters that make a terminal or a
// text view show something other than the text.
func UnsafeRune(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}
