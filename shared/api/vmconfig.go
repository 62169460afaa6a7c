package api

import (
	"fmt"
	"regexp"
	"strings"
)

// VMConfigVersion is the format version of VMConfig written by this code. A reader refuses a
// version it does not know rather than guess at fields.
const VMConfigVersion = 1

// Bounds of a VMConfig, generous against vSphere's own maxima (10 NICs, 4 SCSI + 4 NVMe + 4 SATA
// + 2 IDE controllers, 4 IDE + 120 SATA CD-ROMs, a few dozen boot-relevant extraConfig keys) and
// small enough that a config stays under MaxVMConfigBytes.
const (
	MaxVMConfigBytes       = 1 << 20
	MaxVMConfigNICs        = 32
	MaxVMConfigControllers = 64
	MaxVMConfigCDROMs      = 128
	MaxVMConfigExtra       = 128
	MaxAnnotationLen       = 64 << 10
	maxExtraValueLen       = 1024
)

// VMConfig is a VM's configuration as its backup's snapshot recorded it: what is needed to
// create the VM again, disk by disk and NIC by NIC. It is the body of PUT
// /api/v1/agent/jobs/{id}/vm and of GET /api/v1/backups/{id}/vm, and it is stored as JSON in
// the backup's repository (vmconfigs/<instance uuid>/<backup id>.json), so that a repository
// alone can rebuild the VM.
type VMConfig struct {
	Version      int    `json:"version"` // VMConfigVersion
	InstanceUUID string `json:"instance_uuid"`
	BIOSUUID     string `json:"bios_uuid,omitempty"`
	Name         string `json:"name"`
	// HardwareVersion is config.version, e.g. "vmx-21".
	HardwareVersion string `json:"hardware_version"`
	GuestID         string `json:"guest_id"` // e.g. "otherLinux64Guest", "windows2019srv_64Guest"
	GuestFullName   string `json:"guest_full_name,omitempty"`
	// Firmware is "bios" or "efi"; SecureBoot is bootOptions.efiSecureBootEnabled.
	Firmware       string `json:"firmware"`
	SecureBoot     bool   `json:"secure_boot"`
	BootDelayMS    int64  `json:"boot_delay_ms,omitempty"`
	EnterBIOSSetup bool   `json:"enter_bios_setup,omitempty"`
	NumCPU         int32  `json:"num_cpu"`
	CoresPerSocket int32  `json:"cores_per_socket"`
	MemoryMB       int64  `json:"memory_mb"`
	CPUHotAdd      bool   `json:"cpu_hot_add,omitempty"`
	MemoryHotAdd   bool   `json:"memory_hot_add,omitempty"`
	NestedHV       bool   `json:"nested_hv,omitempty"`
	// CPUAllocation is in MHz, MemoryAllocation in MB; nil when vSphere reported none.
	CPUAllocation    *ResourceAllocation `json:"cpu_allocation,omitempty"`
	MemoryAllocation *ResourceAllocation `json:"memory_allocation,omitempty"`
	Annotation       string              `json:"annotation,omitempty"`
	Controllers      []VMController      `json:"controllers"`
	Disks            []VMConfigDisk      `json:"disks"`
	NICs             []VMNIC             `json:"nics"`
	CDROMs           []VMCDROM           `json:"cdroms"`
	// ExtraConfig holds the advanced settings that decide how the VM boots and how its guest
	// names its devices, and only those: see ExtraConfigAllowed. Everything else in a VM's
	// extraConfig (guestinfo.*, tools and monitoring settings, which may carry secrets) is
	// left out.
	ExtraConfig map[string]string `json:"extra_config,omitempty"`
}

// ResourceAllocation is a CPU (MHz) or memory (MB) reservation, limit (-1: unlimited) and shares.
type ResourceAllocation struct {
	Reservation int64  `json:"reservation"`
	Limit       int64  `json:"limit"`
	Shares      int32  `json:"shares,omitempty"`
	SharesLevel string `json:"shares_level,omitempty"` // low, normal, high, custom
}

// VMController is a storage controller: disks and CD-ROMs name it by key.
type VMController struct {
	Key       int32  `json:"key"`
	Type      string `json:"type"` // pvscsi, lsilogic, lsilogic-sas, buslogic, nvme, sata, ide
	BusNumber int32  `json:"bus_number"`
	// Sharing is the SCSI bus sharing: noSharing, virtualSharing or physicalSharing ("" for
	// controllers without it).
	Sharing string `json:"sharing,omitempty"`
}

// DeviceController names the controller a device hangs off.
type DeviceController struct {
	Key       int32  `json:"key"`
	Type      string `json:"type"`
	BusNumber int32  `json:"bus_number"`
}

// VMConfigDisk is one virtual disk in the snapshot; DiskID matches the backup's disks.
type VMConfigDisk struct {
	DiskID        string           `json:"disk_id"`
	Key           int32            `json:"key"`
	Label         string           `json:"label,omitempty"`
	CapacityBytes int64            `json:"capacity_bytes"`
	Controller    DeviceController `json:"controller"`
	UnitNumber    int32            `json:"unit_number"`
	Provisioning  string           `json:"provisioning,omitempty"` // thin, thick, eagerZeroedThick
	Mode          string           `json:"mode,omitempty"`         // persistent, independent_persistent, ...
	BackingType   string           `json:"backing_type,omitempty"` // flatVer2, seSparse, rdmVirtual, ...
	Sharing       string           `json:"sharing,omitempty"`      // sharingNone, sharingMultiWriter
	Datastore     string           `json:"datastore,omitempty"`
}

// VMNIC is one virtual network adapter.
type VMNIC struct {
	Key         int32  `json:"key"`
	Label       string `json:"label,omitempty"`
	AdapterType string `json:"adapter_type"` // vmxnet3, vmxnet2, vmxnet, e1000, e1000e, pcnet32, sriov
	// BackingType is "network" (a standard port group or network, named by Network),
	// "distributed" (a distributed port group: PortgroupKey on the switch SwitchUUID, Network
	// its name when it could be read) or "opaque" (NSX: Network is the opaque network id).
	BackingType    string `json:"backing_type"`
	Network        string `json:"network,omitempty"`
	PortgroupKey   string `json:"portgroup_key,omitempty"`
	SwitchUUID     string `json:"switch_uuid,omitempty"`
	MACAddress     string `json:"mac_address,omitempty"`
	AddressType    string `json:"address_type,omitempty"` // assigned, generated, manual
	Connected      bool   `json:"connected"`
	StartConnected bool   `json:"start_connected"`
}

// VMCDROM is one CD/DVD drive.
type VMCDROM struct {
	Key        int32            `json:"key"`
	Controller DeviceController `json:"controller"`
	UnitNumber int32            `json:"unit_number"`
	// BackingType is "iso" (ISOFile names the image), "client" (a remote client's device),
	// "host" (the host's device) or "" (none).
	BackingType    string `json:"backing_type,omitempty"`
	ISOFile        string `json:"iso_file,omitempty"`
	Connected      bool   `json:"connected"`
	StartConnected bool   `json:"start_connected"`
}

// VMConfigSummary is the short form of a backup's VMConfig shown with the backup.
type VMConfigSummary struct {
	Digest          string `json:"digest"` // SHA-256 (hex) of the stored JSON
	NumCPU          int32  `json:"num_cpu"`
	MemoryMB        int64  `json:"memory_mb"`
	Firmware        string `json:"firmware"`
	HardwareVersion string `json:"hardware_version"`
	GuestID         string `json:"guest_id"`
	NICs            int    `json:"nics"`
	Disks           int    `json:"disks"`
	Error           string `json:"error,omitempty"` // the stored config could not be read
}

// Summary returns the short form of c.
func (c *VMConfig) Summary(digest string) VMConfigSummary {
	return VMConfigSummary{
		Digest: digest, NumCPU: c.NumCPU, MemoryMB: c.MemoryMB, Firmware: c.Firmware,
		HardwareVersion: c.HardwareVersion, GuestID: c.GuestID, NICs: len(c.NICs), Disks: len(c.Disks),
	}
}

// The extraConfig allow-list (ExtraConfigAllowed). Boot order and delay, UEFI switches, the
// disk UUID flag that guests use to find their boot disk, and the PCI slot numbers of
// controllers, NICs and bridges: a guest names its NICs (Linux predictable names) and finds its
// boot controller (Windows) by PCI location, so a VM rebuilt without them may boot without
// network or not at all.
var (
	extraConfigKeys = map[string]bool{
		"bios.bootOrder":          true,
		"bios.hddOrder":           true,
		"bios.bootDelay":          true,
		"bios.bootRetry.enabled":  true,
		"bios.bootRetry.delay":    true,
		"bios.forceSetupOnce":     true,
		"efi.legacyBoot.enabled":  true,
		"efi.bootOrder":           true,
		"uefi.secureBoot.enabled": true,
		"disk.EnableUUID":         true,
		"firmware":                true,
	}
	extraConfigForms = regexp.MustCompile(`^(?:(?:ethernet|scsi|sata|nvme|ide)\d{1,2}\.pciSlotNumber|pciBridge\d{1,2}\.(?:present|virtualDev|functions|pciSlotNumber))$`)
)

// ExtraConfigAllowed reports whether an extraConfig key is kept in a VMConfig: the exact keys
// above, "<ethernet|scsi|sata|nvme|ide>N.pciSlotNumber" and
// "pciBridgeN.<present|virtualDev|functions|pciSlotNumber>".
func ExtraConfigAllowed(key string) bool {
	return extraConfigKeys[key] || extraConfigForms.MatchString(key)
}

var (
	// macForm is a MAC address as vSphere writes it: six lowercase or uppercase hex pairs.
	macForm = regexp.MustCompile(`^(?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$`)
	// hwVersionForm is config.version: "vmx-21".
	hwVersionForm = regexp.MustCompile(`^vmx-\d{1,3}$`)
	// switchUUIDForm is a distributed switch's uuid: 16 space- or dash-separated hex pairs.
	switchUUIDForm = regexp.MustCompile(`^[0-9A-Fa-f]{2}(?:[ -]?[0-9A-Fa-f]{2}){15}$`)
)

// Validate checks a VMConfig before the hub stores it. The error is a *FieldError naming the
// first bad field, e.g. "nics[1].mac_address". Every string is checked like an inventory's
// (checkText: valid UTF-8, no control or bidi characters, bounded length), every number is
// range-checked, lists are bounded, device keys are unique and every disk and CD-ROM names a
// listed controller.
func (c *VMConfig) Validate() error {
	if c.Version != VMConfigVersion {
		return &FieldError{"version", fmt.Sprintf("must be %d", VMConfigVersion)}
	}
	if !ValidUUID(c.InstanceUUID) {
		return &FieldError{"instance_uuid", "must be a lowercase UUID (config.instanceUuid)"}
	}
	if c.BIOSUUID != "" && !ValidUUID(c.BIOSUUID) {
		return &FieldError{"bios_uuid", "must be a lowercase UUID (config.uuid)"}
	}
	if err := checkName("name", c.Name, true); err != nil {
		return err
	}
	if err := checkForm("hardware_version", c.HardwareVersion, hwVersionForm, "a hardware version such as vmx-21"); err != nil {
		return err
	}
	if err := checkForm("guest_id", c.GuestID, versionForm, "a guest id such as windows2019srv_64Guest"); err != nil {
		return err
	}
	if err := checkName("guest_full_name", c.GuestFullName, false); err != nil {
		return err
	}
	switch c.Firmware {
	case "bios", "efi":
	default:
		return &FieldError{"firmware", "must be bios or efi"}
	}
	if c.SecureBoot && c.Firmware != "efi" {
		return &FieldError{"secure_boot", "requires efi firmware"}
	}
	if err := checkRange("boot_delay_ms", c.BootDelayMS, 0, 1<<31-1); err != nil {
		return err
	}
	if err := checkRange("num_cpu", int64(c.NumCPU), 1, MaxVMCPUs); err != nil {
		return err
	}
	if err := checkRange("cores_per_socket", int64(c.CoresPerSocket), 0, int64(c.NumCPU)); err != nil {
		return err
	}
	if err := checkRange("memory_mb", c.MemoryMB, 1, MaxVMMemoryMB); err != nil {
		return err
	}
	for _, a := range []struct {
		name string
		v    *ResourceAllocation
	}{{"cpu_allocation", c.CPUAllocation}, {"memory_allocation", c.MemoryAllocation}} {
		if err := a.v.validate(a.name); err != nil {
			return err
		}
	}
	// An annotation is free text that often spans lines: newlines and tabs are kept, every
	// other control or bidi character is refused as elsewhere.
	if err := checkText("annotation", strings.NewReplacer("\n", " ", "\t", " ").Replace(c.Annotation), false, MaxAnnotationLen); err != nil {
		return err
	}
	if err := c.validateDevices(); err != nil {
		return err
	}
	if len(c.ExtraConfig) > MaxVMConfigExtra {
		return &FieldError{"extra_config", fmt.Sprintf("%d entries, more than %d", len(c.ExtraConfig), MaxVMConfigExtra)}
	}
	for k, v := range c.ExtraConfig {
		if err := checkName("extra_config", k, true); err != nil {
			return err
		}
		if !ExtraConfigAllowed(k) {
			return &FieldError{"extra_config." + k, "is not a boot-relevant key (see api.ExtraConfigAllowed)"}
		}
		if err := checkText("extra_config."+k, v, false, maxExtraValueLen); err != nil {
			return err
		}
	}
	return nil
}

func (a *ResourceAllocation) validate(p string) error {
	if a == nil {
		return nil
	}
	if err := checkRange(p+".reservation", a.Reservation, 0, 1<<50); err != nil {
		return err
	}
	if err := checkRange(p+".limit", a.Limit, -1, 1<<50); err != nil {
		return err
	}
	if err := checkRange(p+".shares", int64(a.Shares), 0, 1<<31-1); err != nil {
		return err
	}
	switch a.SharesLevel {
	case "", "low", "normal", "high", "custom":
	default:
		return &FieldError{p + ".shares_level", "must be low, normal, high or custom"}
	}
	return nil
}

func (c *VMConfig) validateDevices() error {
	if len(c.Controllers) > MaxVMConfigControllers {
		return &FieldError{"controllers", fmt.Sprintf("%d controllers, more than %d", len(c.Controllers), MaxVMConfigControllers)}
	}
	if len(c.Disks) > MaxDisksPerVM {
		return &FieldError{"disks", fmt.Sprintf("%d disks, more than %d (MaxDisksPerVM)", len(c.Disks), MaxDisksPerVM)}
	}
	if len(c.NICs) > MaxVMConfigNICs {
		return &FieldError{"nics", fmt.Sprintf("%d NICs, more than %d", len(c.NICs), MaxVMConfigNICs)}
	}
	if len(c.CDROMs) > MaxVMConfigCDROMs {
		return &FieldError{"cdroms", fmt.Sprintf("%d CD-ROMs, more than %d", len(c.CDROMs), MaxVMConfigCDROMs)}
	}
	keys := map[int32]string{}
	key := func(field string, k int32) error {
		if k < 0 {
			return &FieldError{field, "must not be negative"}
		}
		if other, dup := keys[k]; dup {
			return &FieldError{field, fmt.Sprintf("duplicate device key %d (also %s)", k, other)}
		}
		keys[k] = field
		return nil
	}
	ctrls := map[int32]VMController{}
	for i, ct := range c.Controllers {
		p := fmt.Sprintf("controllers[%d]", i)
		if err := key(p+".key", ct.Key); err != nil {
			return err
		}
		if err := checkController(p, DeviceController{Key: ct.Key, Type: ct.Type, BusNumber: ct.BusNumber}); err != nil {
			return err
		}
		switch ct.Sharing {
		case "", "noSharing", "virtualSharing", "physicalSharing":
		default:
			return &FieldError{p + ".sharing", "must be noSharing, virtualSharing or physicalSharing"}
		}
		ctrls[ct.Key] = ct
	}
	onController := func(p string, dc DeviceController, unit int32) error {
		if err := checkController(p+".controller", dc); err != nil {
			return err
		}
		if ct, ok := ctrls[dc.Key]; !ok || ct.Type != dc.Type || ct.BusNumber != dc.BusNumber {
			return &FieldError{p + ".controller", fmt.Sprintf("controller %d (%s bus %d) is not among the controllers", dc.Key, dc.Type, dc.BusNumber)}
		}
		return checkRange(p+".unit_number", int64(unit), 0, 1<<16-1)
	}
	for i := range c.Disks {
		d := &c.Disks[i]
		p := fmt.Sprintf("disks[%d]", i)
		if d.Key <= 0 {
			return &FieldError{p + ".key", "must be a positive device key"}
		}
		if err := key(p+".key", d.Key); err != nil {
			return err
		}
		if d.DiskID != DiskIDForKey(d.Key) {
			return &FieldError{p + ".disk_id", fmt.Sprintf("must be %q for key %d", DiskIDForKey(d.Key), d.Key)}
		}
		if err := checkRange(p+".capacity_bytes", d.CapacityBytes, 0, MaxDiskCapacityBytes); err != nil {
			return err
		}
		if err := onController(p, d.Controller, d.UnitNumber); err != nil {
			return err
		}
		switch d.Provisioning {
		case "", "thin", "thick", "eagerZeroedThick":
		default:
			return &FieldError{p + ".provisioning", "must be thin, thick or eagerZeroedThick"}
		}
		for _, f := range []struct {
			name, v string
			form    *regexp.Regexp
			what    string
		}{
			{".mode", d.Mode, diskModeForm, "a disk mode such as independent_persistent"},
			{".backing_type", d.BackingType, wordForm, "a backing name such as flatVer2"},
			{".sharing", d.Sharing, wordForm, "sharingNone or sharingMultiWriter"},
		} {
			if err := checkForm(p+f.name, f.v, f.form, f.what); err != nil {
				return err
			}
		}
		for _, f := range []struct{ name, v string }{{".label", d.Label}, {".datastore", d.Datastore}} {
			if err := checkName(p+f.name, f.v, false); err != nil {
				return err
			}
		}
	}
	for i := range c.NICs {
		n := &c.NICs[i]
		p := fmt.Sprintf("nics[%d]", i)
		if err := key(p+".key", n.Key); err != nil {
			return err
		}
		switch n.AdapterType {
		case "vmxnet3", "vmxnet2", "vmxnet", "e1000", "e1000e", "pcnet32", "sriov", "vmxnet3vrdma":
		default:
			return &FieldError{p + ".adapter_type", "must be vmxnet3, vmxnet2, vmxnet, e1000, e1000e, pcnet32, sriov or vmxnet3vrdma"}
		}
		switch n.BackingType {
		case "network", "distributed", "opaque", "":
		default:
			return &FieldError{p + ".backing_type", "must be network, distributed or opaque"}
		}
		if n.MACAddress != "" && !macForm.MatchString(n.MACAddress) {
			return &FieldError{p + ".mac_address", "must be a MAC address such as 00:50:56:aa:bb:cc"}
		}
		switch n.AddressType {
		case "", "assigned", "generated", "manual":
		default:
			return &FieldError{p + ".address_type", "must be assigned, generated or manual"}
		}
		if n.SwitchUUID != "" && !switchUUIDForm.MatchString(n.SwitchUUID) {
			return &FieldError{p + ".switch_uuid", "must be a distributed switch uuid (16 hex pairs)"}
		}
		for _, f := range []struct{ name, v string }{{".label", n.Label}, {".network", n.Network}, {".portgroup_key", n.PortgroupKey}} {
			if err := checkName(p+f.name, f.v, false); err != nil {
				return err
			}
		}
	}
	for i := range c.CDROMs {
		cd := &c.CDROMs[i]
		p := fmt.Sprintf("cdroms[%d]", i)
		if err := key(p+".key", cd.Key); err != nil {
			return err
		}
		if err := onController(p, cd.Controller, cd.UnitNumber); err != nil {
			return err
		}
		switch cd.BackingType {
		case "", "iso", "client", "host":
		default:
			return &FieldError{p + ".backing_type", "must be iso, client or host"}
		}
		if err := checkDatastorePath(p+".iso_file", cd.ISOFile); err != nil {
			return err
		}
	}
	return nil
}

func checkController(p string, dc DeviceController) error {
	if err := checkForm(p+".type", dc.Type, controllerForm, "a controller kind such as pvscsi"); err != nil {
		return err
	}
	if strings.TrimSpace(dc.Type) == "" {
		return &FieldError{p + ".type", "must not be empty"}
	}
	if err := checkRange(p+".key", int64(dc.Key), 0, 1<<31-1); err != nil {
		return err
	}
	return checkRange(p+".bus_number", int64(dc.BusNumber), 0, 1<<16-1)
}
