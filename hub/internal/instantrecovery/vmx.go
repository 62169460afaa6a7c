package instantrecovery

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/sendense/sendense/shared/api"
)

// vmxDisk is a disk of the generated .vmx: the descriptor it names and where it hangs.
type vmxDisk struct {
	DiskID     string
	File       string // descriptor file name in the VM's folder
	Controller api.DeviceController
	Unit       int32
}

// controllerPrefix is the .vmx device prefix of a controller type, and its virtualDev.
func controllerPrefix(typ string) (prefix, virtualDev string, err error) {
	switch typ {
	case "pvscsi":
		return "scsi", "pvscsi", nil
	case "lsilogic":
		return "scsi", "lsilogic", nil
	case "lsilogic-sas":
		return "scsi", "lsisas1068", nil
	case "buslogic":
		return "scsi", "buslogic", nil
	case "sata":
		return "sata", "", nil
	case "nvme":
		return "nvme", "", nil
	case "ide":
		return "ide", "", nil
	}
	return "", "", fmt.Errorf("controller type %q: %w", typ, ErrUnsupported)
}

// descriptorAdapter is the ddb.adapterType of a disk's descriptor.
func descriptorAdapter(typ string) string {
	switch typ {
	case "ide":
		return "ide"
	case "buslogic":
		return "buslogic"
	}
	return "lsilogic"
}

// nicDev is the .vmx virtualDev of a NIC adapter type.
func nicDev(adapter string) (string, error) {
	switch adapter {
	case "vmxnet3", "vmxnet2", "e1000", "e1000e":
		if adapter == "vmxnet2" {
			return "vmxnet", nil
		}
		return adapter, nil
	case "vmxnet":
		return "vmxnet", nil
	case "pcnet32":
		return "vlance", nil
	}
	return "", fmt.Errorf("network adapter %q: %w", adapter, ErrUnsupported)
}

// guestOS turns the API's guest id into the .vmx key: "windows2019srv_64Guest" →
// "windows2019srv-64", "otherLinux64Guest" → "otherlinux-64", "ubuntu64Guest" → "ubuntu-64".
// ESXi boots an unknown key as "other"; nothing fails on it.
func guestOS(id string) string {
	g := strings.ToLower(strings.TrimSuffix(id, "Guest"))
	switch {
	case g == "":
		return "other"
	case strings.HasSuffix(g, "_64"):
		return strings.TrimSuffix(g, "_64") + "-64"
	case strings.HasSuffix(g, "64"):
		return strings.TrimSuffix(g, "64") + "-64"
	}
	return g
}

// vmxQuote quotes a value the way .vmx files escape: '"', '|', '#' and control characters as
// "|XX" (hex).
func vmxQuote(v string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < 0x20 || c == '"' || c == '|' || c == '#' || c == 0x7f {
			fmt.Fprintf(&b, "|%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String()
}

// VMX writes the configuration ESXi registers for an instant recovery of cfg as name: the
// hardware, firmware, controllers and NICs of the restore point, its disks pointing at the
// descriptors in the VM's folder, NICs on the mapped networks with new MAC addresses (the
// original VM may still be running).
func VMX(cfg api.VMConfig, name, annotation string, disks []vmxDisk, networkMap map[string]string) ([]byte, error) {
	type kv struct{ k, v string }
	var lines []kv
	set := func(k, v string) { lines = append(lines, kv{k, v}) }
	hw := strings.TrimPrefix(cfg.HardwareVersion, "vmx-")
	if _, err := strconv.Atoi(hw); err != nil {
		hw = "13" // ESXi 6.5 and later run it
	}
	set(".encoding", "UTF-8")
	set("config.version", "8")
	set("virtualHW.version", hw)
	set("displayName", name)
	set("guestOS", guestOS(cfg.GuestID))
	set("annotation", annotation)
	numCPU := max(cfg.NumCPU, 1)
	set("numvcpus", strconv.Itoa(int(numCPU)))
	if cfg.CoresPerSocket > 0 {
		set("cpuid.coresPerSocket", strconv.Itoa(int(cfg.CoresPerSocket)))
	}
	set("memSize", strconv.FormatInt(max(cfg.MemoryMB, 4), 10))
	if cfg.Firmware == "efi" {
		set("firmware", "efi")
		if cfg.SecureBoot {
			set("uefi.secureBoot.enabled", "TRUE")
		}
	}
	if cfg.CPUHotAdd {
		set("vcpu.hotadd", "TRUE")
	}
	if cfg.MemoryHotAdd {
		set("mem.hotadd", "TRUE")
	}
	if cfg.NestedHV {
		set("vhv.enable", "TRUE")
	}
	if cfg.BootDelayMS > 0 {
		set("bios.bootDelay", strconv.FormatInt(cfg.BootDelayMS, 10))
	}

	prefixOf := map[int32]string{} // controller key → "scsi0"
	for _, c := range cfg.Controllers {
		p, dev, err := controllerPrefix(c.Type)
		if err != nil {
			return nil, err
		}
		id := p + strconv.Itoa(int(c.BusNumber))
		prefixOf[c.Key] = id
		set(id+".present", "TRUE")
		if dev != "" {
			set(id+".virtualDev", dev)
		}
		if c.Sharing == "virtualSharing" || c.Sharing == "physicalSharing" {
			set(id+".sharedBus", strings.TrimSuffix(c.Sharing, "Sharing"))
		}
	}
	for _, d := range disks {
		p, ok := prefixOf[d.Controller.Key]
		if !ok {
			// A configuration without the controller (older captures): the disk's own record.
			var err error
			if p, _, err = controllerPrefix(d.Controller.Type); err != nil {
				return nil, fmt.Errorf("disk %s: %w", d.DiskID, err)
			}
			p += strconv.Itoa(int(d.Controller.BusNumber))
			prefixOf[d.Controller.Key] = p
			set(p+".present", "TRUE")
		}
		dev := fmt.Sprintf("%s:%d", p, d.Unit)
		set(dev+".present", "TRUE")
		set(dev+".deviceType", "scsi-hardDisk")
		if strings.HasPrefix(p, "ide") || strings.HasPrefix(p, "sata") || strings.HasPrefix(p, "nvme") {
			lines = lines[:len(lines)-1] // only SCSI disks name their type
		}
		set(dev+".fileName", d.File)
	}
	for i, n := range cfg.NICs {
		dev, err := nicDev(n.AdapterType)
		if err != nil {
			return nil, err
		}
		id := "ethernet" + strconv.Itoa(i)
		network := n.Network
		if m := networkMap[n.Network]; m != "" {
			network = m
		}
		set(id+".present", "TRUE")
		set(id+".virtualDev", dev)
		if network != "" {
			set(id+".networkName", network)
		}
		set(id+".addressType", "generated")
		set(id+".startConnected", strings.ToUpper(strconv.FormatBool(n.StartConnected)))
	}
	keys := make([]string, 0, len(cfg.ExtraConfig))
	for k := range cfg.ExtraConfig {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		set(k, cfg.ExtraConfig[k])
	}
	var b strings.Builder
	for _, l := range lines {
		if strings.ContainsAny(l.k, " =\"\n") || l.k == "" {
			return nil, fmt.Errorf("configuration key %q: not a .vmx key", l.k)
		}
		b.WriteString(l.k + " = " + vmxQuote(l.v) + "\n")
	}
	return []byte(b.String()), nil
}
