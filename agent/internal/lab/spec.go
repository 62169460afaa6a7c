package lab

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"math/big"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ErrInvalidSpec marks a lab specification (YAML, flags or Go value) that cannot be built.
var ErrInvalidSpec = errors.New("invalid lab spec")

// Spec describes the inventory a lab starts with.
type Spec struct {
	Datacenter string   `yaml:"datacenter"` // default "DC0"
	VMs        []VMSpec `yaml:"vms"`
}

// VMSpec describes one virtual machine of a lab.
type VMSpec struct {
	Name         string     `yaml:"name"`
	CBT          bool       `yaml:"cbt"`           // changeTrackingEnabled at start
	PoweredOff   bool       `yaml:"powered_off"`   // stays powered off (templates always are)
	QuiesceFails bool       `yaml:"quiesce_fails"` // CreateSnapshot with quiesce=true fails with ApplicationQuiesceFault
	CloneOf      string     `yaml:"clone_of"`      // copy the disk contents of this VM (created earlier in the spec or lab)
	Template     bool       `yaml:"template"`      // marked as a template
	Disks        []DiskSpec `yaml:"disks"`         // empty with clone_of: the source's disks
}

// DiskSpec describes one virtual disk. Capacities and data amounts are rounded up to a whole MiB.
type DiskSpec struct {
	Key            int32  `yaml:"key"`             // device key; default 2000, 2001, ... (2000-3999)
	Size           string `yaml:"size"`            // "102GB", "5GiB", "4194304" (see ParseSize)
	Fill           string `yaml:"fill"`            // zeros (default) | random | compressible | sparse
	Data           string `yaml:"data"`            // bytes to fill: default all for random/compressible, 1% for sparse
	Seed           int64  `yaml:"seed"`            // content seed; 0 derives one from the VM name and key
	Mode           string `yaml:"mode"`            // persistent (default) | independent_persistent | independent_nonpersistent
	CBTUnsupported bool   `yaml:"cbt_unsupported"` // QueryChangedDiskAreas faults for this disk (like a physical RDM)
}

// Fill kinds of DiskSpec.Fill.
const (
	FillZeros        = "zeros"        // a hole: reads as zeros, nothing allocated
	FillRandom       = "random"       // incompressible bytes from the start of the disk
	FillCompressible = "compressible" // bytes that compress about 2.5x (zstd level 1), from the start of the disk
	FillSparse       = "sparse"       // extents spread over the disk, alternating random and compressible 4 MiB slots
)

// Disk modes of DiskSpec.Mode, as vSphere names them.
const (
	ModePersistent               = "persistent"
	ModeIndependentPersistent    = "independent_persistent"
	ModeIndependentNonpersistent = "independent_nonpersistent"
)

const (
	mib = int64(1) << 20
	// minDiskKey and maxDiskKey bound disk device keys: vSphere numbers virtual disks from 2000 and
	// the simulator's default devices use 100-700, 4000 and 12000.
	minDiskKey = 2000
	maxDiskKey = 3999
	// maxDisksPerVM is four SCSI controllers of 15 disks each (unit 7 is the controller).
	maxDisksPerVM = 60
	// maxNameLen is vSphere's limit for a VM name.
	maxNameLen = 80
)

// DemoSpec is the lab of `make demo`: VM pgtest1 with change tracking on and two thin disks:
// key 2000, 102 GB (102e9 bytes rounded up to 97,275 MiB = 102,000,230,400 bytes) with about
// 2 GiB of data in extents spread over the disk, half random and half compressible; and key 2001,
// 5 GB (rounded up to 4,769 MiB = 5,000,658,944 bytes) with 512 MiB of compressible data at its
// start.
func DemoSpec() Spec {
	return Spec{
		Datacenter: "DC0",
		VMs: []VMSpec{{
			Name: "pgtest1",
			CBT:  true,
			Disks: []DiskSpec{
				{Key: 2000, Size: "102GB", Fill: FillSparse, Data: "2GiB", Seed: 1},
				{Key: 2001, Size: "5GB", Fill: FillCompressible, Data: "512MiB", Seed: 2},
			},
		}},
	}
}

// BulkSpec is a lab for discovery benchmarks: vms VMs named bench-0001, bench-0002, ... with
// change tracking on, each with disksPerVM disks of size filled as fill (see DiskSpec).
func BulkSpec(vms, disksPerVM int, size, fill string) Spec {
	spec := Spec{Datacenter: "DC0", VMs: make([]VMSpec, 0, vms)}
	for i := range vms {
		vm := VMSpec{Name: fmt.Sprintf("bench-%04d", i+1), CBT: true}
		for range disksPerVM {
			vm.Disks = append(vm.Disks, DiskSpec{Size: size, Fill: fill})
		}
		spec.VMs = append(spec.VMs, vm)
	}
	return spec
}

// ParseSpec decodes a YAML lab specification, rejecting unknown fields, and validates it.
func ParseSpec(data []byte) (Spec, error) {
	var spec Spec
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&spec); err != nil {
		return Spec{}, fmt.Errorf("%w: decode yaml: %w", ErrInvalidSpec, err)
	}
	if spec.Datacenter == "" {
		spec.Datacenter = "DC0"
	}
	if _, err := spec.plan(nil); err != nil {
		return Spec{}, err
	}
	return spec, nil
}

// ParseSize parses a byte count: a plain number of bytes ("4194304"), or a number with a decimal
// (kB/KB, MB, GB, TB, PB: powers of 1000) or binary (KiB, MiB, GiB, TiB, PiB: powers of 1024)
// unit, optionally with a fraction and a space ("1.5 GiB"). The result must be a whole number of
// bytes.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	if num == "" {
		return 0, fmt.Errorf("size %q: no number", s)
	}
	mult, ok := sizeUnits[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)", s, unit)
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("size %q: bad number %q", s, num)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, fmt.Errorf("size %q is not a whole number of bytes", s)
	}
	if !r.Num().IsInt64() {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return r.Num().Int64(), nil
}

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "pb": 1e15,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40, "pib": 1 << 50,
}

// roundUpMiB rounds n up to a whole MiB.
func roundUpMiB(n int64) int64 { return (n + mib - 1) / mib * mib }

// vmPlan is a validated VMSpec with every default applied.
type vmPlan struct {
	name         string
	cbt          bool
	poweredOff   bool
	quiesceFails bool
	cloneOf      string
	template     bool
	disks        []diskPlan
}

// diskPlan is a validated DiskSpec with every default applied.
type diskPlan struct {
	key            int32
	capacity       int64 // bytes, a whole MiB
	fill           string
	data           int64 // bytes to fill, a whole MiB, <= capacity
	seed           int64
	mode           string
	cbtUnsupported bool
	cloned         bool // contents copied from the clone source's disk with the same key
}

// plan validates the spec and returns the VMs in creation order (clone sources first). existing
// holds the plans of VMs already in the lab, which clone_of may name.
func (s Spec) plan(existing map[string]vmPlan) ([]vmPlan, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, a...))
	}
	if strings.ContainsAny(s.Datacenter, "/\\") {
		return nil, bad("datacenter name %q contains a slash", s.Datacenter)
	}
	byName := make(map[string]VMSpec, len(s.VMs))
	for _, vm := range s.VMs {
		if err := checkVMName(vm.Name); err != nil {
			return nil, bad("%v", err)
		}
		if _, dup := byName[vm.Name]; dup {
			return nil, bad("VM %q appears twice", vm.Name)
		}
		if _, dup := existing[vm.Name]; dup {
			return nil, bad("VM %q already exists", vm.Name)
		}
		byName[vm.Name] = vm
	}

	plans := make(map[string]vmPlan, len(s.VMs))
	var order []vmPlan
	visiting := make(map[string]bool)
	var visit func(name string) error
	visit = func(name string) error {
		if _, done := plans[name]; done {
			return nil
		}
		if visiting[name] {
			return bad("clone_of forms a cycle through VM %q", name)
		}
		visiting[name] = true
		vm := byName[name]
		var source *vmPlan
		if vm.CloneOf != "" {
			if vm.CloneOf == vm.Name {
				return bad("VM %q: clone_of names itself", vm.Name)
			}
			if _, inSpec := byName[vm.CloneOf]; inSpec {
				if err := visit(vm.CloneOf); err != nil {
					return err
				}
				p := plans[vm.CloneOf]
				source = &p
			} else if p, ok := existing[vm.CloneOf]; ok {
				source = &p
			} else {
				return bad("VM %q: clone_of names unknown VM %q", vm.Name, vm.CloneOf)
			}
		}
		p, err := planVM(vm, source)
		if err != nil {
			return bad("VM %q: %v", vm.Name, err)
		}
		plans[name] = p
		order = append(order, p)
		return nil
	}
	for _, vm := range s.VMs {
		if err := visit(vm.Name); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func checkVMName(name string) error {
	switch {
	case name == "":
		return errors.New("a VM has no name")
	case len(name) > maxNameLen:
		return fmt.Errorf("VM name %q is longer than %d characters", name, maxNameLen)
	case strings.ContainsAny(name, "/\\[]\x00"), name == ".", name == "..":
		return fmt.Errorf("VM name %q contains a slash, a bracket or a NUL", name)
	}
	return nil
}

func planVM(vm VMSpec, source *vmPlan) (vmPlan, error) {
	p := vmPlan{
		name:         vm.Name,
		cbt:          vm.CBT,
		poweredOff:   vm.PoweredOff || vm.Template,
		quiesceFails: vm.QuiesceFails,
		cloneOf:      vm.CloneOf,
		template:     vm.Template,
	}
	disks := vm.Disks
	if len(disks) == 0 && source != nil {
		// A clone without its own disk list gets the source's disks, contents copied.
		for _, d := range source.disks {
			p.disks = append(p.disks, diskPlan{
				key: d.key, capacity: d.capacity, fill: FillZeros, seed: d.seed,
				mode: d.mode, cbtUnsupported: d.cbtUnsupported, cloned: true,
			})
		}
		return p, nil
	}
	if len(disks) > maxDisksPerVM {
		return p, fmt.Errorf("%d disks, at most %d", len(disks), maxDisksPerVM)
	}
	used := make(map[int32]bool, len(disks))
	for _, d := range disks {
		if d.Key != 0 {
			if used[d.Key] {
				return p, fmt.Errorf("disk key %d appears twice", d.Key)
			}
			used[d.Key] = true
		}
	}
	next := int32(minDiskKey)
	for i, d := range disks {
		key := d.Key
		if key == 0 {
			for used[next] {
				next++
			}
			key = next
			used[key] = true
		}
		dp, err := planDisk(vm.Name, key, d)
		if err != nil {
			return p, fmt.Errorf("disk %d (key %d): %w", i, key, err)
		}
		if source != nil {
			for _, sd := range source.disks {
				if sd.key == dp.key {
					if dp.fill != FillZeros {
						return p, fmt.Errorf("disk key %d is cloned from %q and cannot also have fill %q", dp.key, source.name, dp.fill)
					}
					dp.cloned = true
				}
			}
		}
		p.disks = append(p.disks, dp)
	}
	return p, nil
}

func planDisk(vmName string, key int32, d DiskSpec) (diskPlan, error) {
	if key < minDiskKey || key > maxDiskKey {
		return diskPlan{}, fmt.Errorf("key %d outside %d-%d", key, minDiskKey, maxDiskKey)
	}
	if d.Size == "" {
		return diskPlan{}, errors.New("no size")
	}
	size, err := ParseSize(d.Size)
	if err != nil {
		return diskPlan{}, err
	}
	if size <= 0 {
		return diskPlan{}, fmt.Errorf("size %q is not positive", d.Size)
	}
	p := diskPlan{
		key:            key,
		capacity:       roundUpMiB(size),
		fill:           d.Fill,
		seed:           d.Seed,
		mode:           d.Mode,
		cbtUnsupported: d.CBTUnsupported,
	}
	if p.fill == "" {
		p.fill = FillZeros
	}
	if p.mode == "" {
		p.mode = ModePersistent
	}
	switch p.mode {
	case ModePersistent, ModeIndependentPersistent, ModeIndependentNonpersistent:
	default:
		return diskPlan{}, fmt.Errorf("unknown mode %q (persistent, independent_persistent, independent_nonpersistent)", p.mode)
	}
	if p.seed == 0 {
		h := fnv.New64a()
		fmt.Fprintf(h, "%s/%d", vmName, key)
		p.seed = int64(h.Sum64() >> 1)
	}
	switch p.fill {
	case FillZeros:
		if d.Data != "" {
			return diskPlan{}, fmt.Errorf("data %q with fill zeros", d.Data)
		}
		return p, nil
	case FillRandom, FillCompressible:
		p.data = p.capacity
	case FillSparse:
		p.data = roundUpMiB(p.capacity / 100)
	default:
		return diskPlan{}, fmt.Errorf("unknown fill %q (zeros, random, compressible, sparse)", p.fill)
	}
	if d.Data != "" {
		n, err := ParseSize(d.Data)
		if err != nil {
			return diskPlan{}, fmt.Errorf("data: %w", err)
		}
		p.data = roundUpMiB(n)
	}
	if p.data > p.capacity {
		return diskPlan{}, fmt.Errorf("data %q is larger than the disk (%d bytes)", d.Data, p.capacity)
	}
	return p, nil
}
