package api

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxNameLen bounds names and other free-text identifiers in requests (VARCHAR(255) columns).
const MaxNameLen = 255

// maxPathLen bounds URLs, folder paths and datastore paths.
const maxPathLen = 1024

var (
	// uuidForm is the form vSphere reports instance and BIOS UUIDs in (config.instanceUuid,
	// config.uuid, about.instanceUuid): lowercase hex, 8-4-4-4-12. vCenter, ESXi, vcsim and the
	// lab all send exactly this.
	uuidForm = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	// morefForm is a managed object id: "vm-42" from vCenter, "42" from an ESXi host agent.
	morefForm = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$`)
	// Short vSphere enumerations and type names: flatVer2, lsilogic-sas, independent_persistent.
	versionForm    = regexp.MustCompile(`^[A-Za-z0-9._-]*$`)
	wordForm       = regexp.MustCompile(`^[A-Za-z0-9]*$`)
	controllerForm = regexp.MustCompile(`^[a-z0-9-]*$`)
	diskModeForm   = regexp.MustCompile(`^[a-z_]*$`)
)

// ValidUUID reports whether s is a UUID in the form vSphere reports them (see Inventory).
func ValidUUID(s string) bool { return uuidForm.MatchString(s) }

// Validate checks an inventory before anything is applied. The error is a *FieldError naming the
// first bad field, e.g. "vms[3].disks[0].capacity_bytes". Every string must be valid UTF-8
// without control or bidi characters (UnsafeRune); identifiers must have their vSphere form:
// UUIDs lowercase 8-4-4-4-12 hex, disk ids "disk-<device key>" with a positive key, datastore
// paths "[datastore] path" without ".." elements.
func (inv *Inventory) Validate() error {
	if err := inv.Source.validate(); err != nil {
		return err
	}
	if len(inv.VMs) > MaxInventoryVMs {
		return &FieldError{"vms", fmt.Sprintf("%d VMs, more than the limit of %d per inventory (MaxInventoryVMs)", len(inv.VMs), MaxInventoryVMs)}
	}
	seenVM := make(map[string]int, len(inv.VMs))
	for i := range inv.VMs {
		p := fmt.Sprintf("vms[%d]", i)
		if err := inv.VMs[i].validate(p); err != nil {
			return err
		}
		if j, dup := seenVM[inv.VMs[i].InstanceUUID]; dup {
			return &FieldError{p + ".instance_uuid", fmt.Sprintf("duplicate of vms[%d]", j)}
		}
		seenVM[inv.VMs[i].InstanceUUID] = i
	}
	return nil
}

func (s *Source) validate() error {
	if err := checkName("source.name", s.Name, true); err != nil {
		return err
	}
	if strings.ContainsAny(s.Name, " /\\") || len(s.Name) > 128 {
		return &FieldError{"source.name", "must not contain spaces or slashes and be at most 128 characters"}
	}
	if err := checkText("source.url", s.URL, false, maxPathLen); err != nil {
		return err
	}
	if s.URL != "" {
		u, err := url.Parse(s.URL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return &FieldError{"source.url", "must be an absolute http or https URL, e.g. https://vcenter.example.com/sdk"}
		}
	}
	switch s.APIType {
	case "", "VirtualCenter", "HostAgent":
	default:
		return &FieldError{"source.api_type", "must be VirtualCenter or HostAgent"}
	}
	if err := checkForm("source.version", s.Version, versionForm, "a vSphere API version such as 8.0.3.0"); err != nil {
		return err
	}
	if s.InstanceUUID == "" {
		return &FieldError{"source.instance_uuid", "must not be empty: the vCenter's about.instanceUuid (or an ESXi host's hardware UUID)"}
	}
	if !ValidUUID(s.InstanceUUID) {
		return &FieldError{"source.instance_uuid", "must be a lowercase UUID (about.instanceUuid), e.g. 0ba3d9a4-8f39-4a3c-9d36-2c1b6f1e7a10"}
	}
	return nil
}

func (vm *VM) validate(p string) error {
	if err := checkName(p+".instance_uuid", vm.InstanceUUID, true); err != nil {
		return err
	}
	if !ValidUUID(vm.InstanceUUID) {
		return &FieldError{p + ".instance_uuid", "must be a lowercase UUID (config.instanceUuid), e.g. 5012abcd-1111-2222-3333-444455556666"}
	}
	if vm.BIOSUUID != "" && !ValidUUID(vm.BIOSUUID) {
		return &FieldError{p + ".bios_uuid", "must be a lowercase UUID (config.uuid)"}
	}
	if vm.MoRef != "" && !morefForm.MatchString(vm.MoRef) {
		return &FieldError{p + ".moref", "must be a managed object id such as vm-42"}
	}
	if err := checkName(p+".name", vm.Name, true); err != nil {
		return err
	}
	switch vm.PowerState {
	case "", "poweredOn", "poweredOff", "suspended":
	default:
		return &FieldError{p + ".power_state", "must be poweredOn, poweredOff or suspended"}
	}
	for _, f := range []struct{ name, v string }{
		{".guest_os", vm.GuestOS}, {".datacenter", vm.Datacenter}, {".cluster", vm.Cluster}, {".host", vm.Host},
	} {
		if err := checkName(p+f.name, f.v, false); err != nil {
			return err
		}
	}
	if err := checkText(p+".folder", vm.Folder, false, maxPathLen); err != nil {
		return err
	}
	if err := checkRange(p+".num_cpu", int64(vm.NumCPU), 0, MaxVMCPUs); err != nil {
		return err
	}
	if err := checkRange(p+".memory_mb", vm.MemoryMB, 0, MaxVMMemoryMB); err != nil {
		return err
	}
	if len(vm.Disks) > MaxDisksPerVM {
		return &FieldError{p + ".disks", fmt.Sprintf("%d disks, more than the limit of %d per VM (MaxDisksPerVM)", len(vm.Disks), MaxDisksPerVM)}
	}
	seenKey := make(map[int32]int, len(vm.Disks))
	for j := range vm.Disks {
		d := &vm.Disks[j]
		dp := fmt.Sprintf("%s.disks[%d]", p, j)
		if k, dup := seenKey[d.Key]; dup {
			return &FieldError{dp + ".key", fmt.Sprintf("duplicate device key %d (also disks[%d])", d.Key, k)}
		}
		seenKey[d.Key] = j
		if err := d.validate(dp); err != nil {
			return err
		}
	}
	return nil
}

func (d *Disk) validate(dp string) error {
	if d.Key <= 0 {
		return &FieldError{dp + ".key", "must be a positive device key"}
	}
	if err := checkName(dp+".disk_id", d.DiskID, false); err != nil {
		return err
	}
	if d.DiskID != DiskIDForKey(d.Key) {
		return &FieldError{dp + ".disk_id", fmt.Sprintf("must be %q for key %d", DiskIDForKey(d.Key), d.Key)}
	}
	if err := checkRange(dp+".capacity_bytes", d.CapacityBytes, 0, MaxDiskCapacityBytes); err != nil {
		return err
	}
	if err := checkRange(dp+".controller_bus", int64(d.ControllerBus), 0, 1<<16-1); err != nil {
		return err
	}
	if err := checkRange(dp+".unit_number", int64(d.UnitNumber), 0, 1<<16-1); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{
		{".label", d.Label}, {".datastore", d.Datastore}, {".not_backupable_reason", d.NotBackupableReason}, {".change_id", d.ChangeID},
	} {
		if err := checkName(dp+f.name, f.v, false); err != nil {
			return err
		}
	}
	// A datastore's name is written inside the brackets of every path on it.
	if strings.ContainsAny(d.Datastore, "[]") {
		return &FieldError{dp + ".datastore", "must not contain [ or ]"}
	}
	if err := checkDatastorePath(dp+".backing_file", d.BackingFile); err != nil {
		return err
	}
	switch d.Provisioning {
	case "", "thin", "thick", "eagerZeroedThick":
	default:
		return &FieldError{dp + ".provisioning", "must be thin, thick or eagerZeroedThick"}
	}
	for _, f := range []struct {
		name, v string
		form    *regexp.Regexp
		example string
	}{
		{".backing_type", d.BackingType, wordForm, "a backing name such as flatVer2"},
		{".controller_type", d.ControllerType, controllerForm, "a controller kind such as pvscsi"},
		{".disk_mode", d.DiskMode, diskModeForm, "a disk mode such as independent_persistent"},
	} {
		if err := checkForm(dp+f.name, f.v, f.form, f.example); err != nil {
			return err
		}
	}
	return nil
}

// checkDatastorePath checks a vSphere datastore path, "[datastore] folder/file.vmdk" ("[]" for
// a path outside any datastore), when it is set.
func checkDatastorePath(field, v string) error {
	if err := checkText(field, v, false, maxPathLen); err != nil || v == "" {
		return err
	}
	end := strings.IndexByte(v, ']')
	if !strings.HasPrefix(v, "[") || end < 0 || strings.ContainsAny(v[1:end], "[") {
		return &FieldError{field, `must be a datastore path such as "[datastore] vm/vm.vmdk"`}
	}
	for _, elem := range strings.Split(v[end+1:], "/") {
		if strings.TrimSpace(elem) == ".." {
			return &FieldError{field, `must not contain ".." elements`}
		}
	}
	return nil
}

func checkForm(field, v string, form *regexp.Regexp, what string) error {
	if err := checkName(field, v, false); err != nil {
		return err
	}
	if !form.MatchString(v) {
		return &FieldError{field, "must be " + what}
	}
	return nil
}

func checkRange(field string, v, lo, hi int64) error {
	if v < lo || v > hi {
		return &FieldError{field, "must be between " + strconv.FormatInt(lo, 10) + " and " + strconv.FormatInt(hi, 10)}
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

// DisplayText returns s as free text that is safe to store and show: bytes that are not UTF-8
// become U+FFFD, tabs and line breaks a space, every other rune UnsafeRune reports U+FFFD, and
// the result is cut to at most max bytes on a rune boundary. An agent's error messages and
// notes go through it before the hub records them.
func DisplayText(s string, max int) string {
	clean := len(s) <= max && utf8.ValidString(s)
	for _, r := range s {
		if !clean {
			break
		}
		clean = !UnsafeRune(r)
	}
	if clean {
		return s
	}
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case r == '\t', r == '\n', r == '\r':
			r = ' '
		case UnsafeRune(r):
			r = utf8.RuneError
		}
		if b.Len()+utf8.RuneLen(r) > max {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
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
