package nfsexport

import (
	"fmt"
	"hash/fnv"
	"strings"
)

// Descriptor returns the text descriptor of d's flat file, as ESXi writes one for a flat disk
// on an NFS datastore: one VMFS extent naming Name-flat.vmdk, and a CHS geometry computed the
// way ESXi does for SCSI disks (255 heads, 63 sectors per track).
func Descriptor(d Disk) []byte {
	sectors := d.Size / 512
	adapter := d.AdapterType
	if adapter == "" {
		adapter = "lsilogic"
	}
	cyl := sectors / (255 * 63)
	if cyl > 65535 && adapter == "ide" {
		cyl = 65535
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", d.Name, d.Size)
	sum := h.Sum64()
	var uuid strings.Builder
	for i := 0; i < 8; i++ {
		if i > 0 {
			uuid.WriteByte(' ')
		}
		fmt.Fprintf(&uuid, "%02x", byte(sum>>(56-8*i)))
	}
	// ddb.uuid takes 16 bytes; the second half repeats the first, which keeps it stable per
	// disk name and size.
	u := uuid.String() + " " + uuid.String()
	return []byte(fmt.Sprintf(`# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=fffffffe
parentCID=ffffffff
createType="vmfs"

# Extent description
RW %d VMFS "%s-flat.vmdk"

# The Disk Data Base
#DDB

ddb.adapterType = "%s"
ddb.geometry.cylinders = "%d"
ddb.geometry.heads = "255"
ddb.geometry.sectors = "63"
ddb.thinProvisioned = "1"
ddb.uuid = "%s"
ddb.virtualHWVersion = "13"
`, sectors, d.Name, adapter, cyl, u))
}
