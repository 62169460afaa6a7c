package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
)

// Limits of the partition tables this package reads; a table claiming more is refused or cut,
// so that a hostile image cannot make the hub allocate or loop without bound.
const (
	sectorSize       = 512
	maxGPTEntries    = 1024 // 128 are usual; the array is read whole, so it is bounded
	maxGPTEntrySize  = 1024
	maxLogicalVolume = 128 // logical partitions of an MBR extended partition, a linked list on disk
)

// volume is a region of the disk that may hold a filesystem: a partition or the whole disk.
type volume struct {
	Name string // p1, p2, … or "disk"
	Off  int64
	Size int64
}

// findVolumes reads the partition table of a disk of size bytes: GPT (behind a protective MBR),
// MBR with its extended partitions, or none, when the whole disk is one volume named "disk".
// Partitions are named after their number in the table (GPT: their index in the entry array
// plus one; MBR: 1–4 for primaries, 5 and up for logical partitions), so a name stays the one
// fdisk and the guest show.
func findVolumes(r io.ReaderAt, size int64) ([]volume, error) {
	if size < sectorSize {
		return []volume{{Name: "disk", Off: 0, Size: size}}, nil
	}
	mbr := make([]byte, sectorSize)
	if _, err := r.ReadAt(mbr, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read partition table: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa || string(mbr[3:11]) == "NTFS    " {
		// No MBR, or an NTFS boot sector (whose boot code may pass for partition entries).
		return []volume{{Name: "disk", Off: 0, Size: size}}, nil
	}
	type mbrEntry struct {
		typ         byte
		start, size int64
	}
	var entries [4]mbrEntry
	valid, protective := 0, false
	for i := range entries {
		e := mbr[446+16*i : 446+16*(i+1)]
		if e[0] != 0 && e[0] != 0x80 {
			// A boot indicator that is neither 0 nor 0x80: this sector is a filesystem's boot
			// sector (FAT, NTFS), not an MBR.
			return []volume{{Name: "disk", Off: 0, Size: size}}, nil
		}
		entries[i] = mbrEntry{typ: e[4], start: int64(binary.LittleEndian.Uint32(e[8:])), size: int64(binary.LittleEndian.Uint32(e[12:]))}
		if entries[i].typ != 0 && entries[i].size > 0 {
			valid++
		}
		if entries[i].typ == 0xee {
			protective = true
		}
	}
	if protective {
		return readGPT(r, size)
	}
	if valid == 0 {
		return []volume{{Name: "disk", Off: 0, Size: size}}, nil
	}
	var out []volume
	for i, e := range entries {
		if e.typ == 0 || e.size == 0 {
			continue
		}
		if isExtended(e.typ) {
			logical, err := readLogical(r, size, e.start*sectorSize, e.size*sectorSize)
			if err != nil {
				return nil, err
			}
			out = append(out, logical...)
			continue
		}
		if v, ok := clip(fmt.Sprintf("p%d", i+1), e.start*sectorSize, e.size*sectorSize, size); ok {
			out = append(out, v)
		}
	}
	return out, nil
}

func isExtended(t byte) bool { return t == 0x05 || t == 0x0f || t == 0x85 }

// clip returns the volume when it starts inside the disk, cut to the disk's end.
func clip(name string, off, n, disk int64) (volume, bool) {
	if off <= 0 || off >= disk || n <= 0 {
		return volume{}, false
	}
	return volume{Name: name, Off: off, Size: min(n, disk-off)}, true
}

// readLogical follows the chain of extended boot records of an extended partition at [base,
// base+n). Each record's link is relative to base; a chain longer than maxLogicalVolume, or one
// that returns to a record it visited, is cut there.
func readLogical(r io.ReaderAt, disk, base, n int64) ([]volume, error) {
	var out []volume
	seen := map[int64]bool{}
	buf := make([]byte, sectorSize)
	ebr := base
	for num := 5; num < 5+maxLogicalVolume; num++ {
		if ebr <= 0 || ebr+sectorSize > disk || ebr < base || ebr >= base+n || seen[ebr] {
			break
		}
		seen[ebr] = true
		if _, err := r.ReadAt(buf, ebr); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read extended boot record at %d: %w", ebr, err)
		}
		if buf[510] != 0x55 || buf[511] != 0xaa {
			break
		}
		e, link := buf[446:462], buf[462:478]
		if e[4] != 0 {
			start := ebr + int64(binary.LittleEndian.Uint32(e[8:]))*sectorSize
			if v, ok := clip("p"+strconv.Itoa(num), start, int64(binary.LittleEndian.Uint32(e[12:]))*sectorSize, disk); ok {
				out = append(out, v)
			}
		}
		if link[4] == 0 {
			break
		}
		ebr = base + int64(binary.LittleEndian.Uint32(link[8:]))*sectorSize
	}
	return out, nil
}

// readGPT reads the GPT header at LBA 1 and its entry array, both checked against their
// CRC32s; when the primary header is damaged, the backup at the disk's last sector is used.
func readGPT(r io.ReaderAt, size int64) ([]volume, error) {
	var firstErr error
	for _, lba := range []int64{1, size/sectorSize - 1} {
		vs, err := readGPTAt(r, size, lba)
		if err == nil {
			return vs, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

func readGPTAt(r io.ReaderAt, size, lba int64) ([]volume, error) {
	h := make([]byte, sectorSize)
	if _, err := r.ReadAt(h, lba*sectorSize); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read GPT header at LBA %d: %w", lba, err)
	}
	if string(h[:8]) != "EFI PART" {
		return nil, fmt.Errorf("GPT header at LBA %d: no signature: %w", lba, ErrCorrupt)
	}
	hsize := binary.LittleEndian.Uint32(h[12:])
	if hsize < 92 || hsize > sectorSize {
		return nil, fmt.Errorf("GPT header at LBA %d: size %d: %w", lba, hsize, ErrCorrupt)
	}
	want := binary.LittleEndian.Uint32(h[16:])
	hc := append([]byte(nil), h[:hsize]...)
	clear(hc[16:20])
	if crc32.ChecksumIEEE(hc) != want {
		return nil, fmt.Errorf("GPT header at LBA %d: checksum mismatch: %w", lba, ErrCorrupt)
	}
	arrayLBA := int64(binary.LittleEndian.Uint64(h[72:]))
	count := binary.LittleEndian.Uint32(h[80:])
	esize := binary.LittleEndian.Uint32(h[84:])
	if count == 0 || count > maxGPTEntries || esize < 128 || esize > maxGPTEntrySize || esize%8 != 0 {
		return nil, fmt.Errorf("GPT header at LBA %d: %d entries of %d bytes: %w", lba, count, esize, ErrCorrupt)
	}
	if arrayLBA <= 0 || arrayLBA > size/sectorSize {
		return nil, fmt.Errorf("GPT header at LBA %d: entry array at LBA %d: %w", lba, arrayLBA, ErrCorrupt)
	}
	arr := make([]byte, int(count)*int(esize))
	if _, err := r.ReadAt(arr, arrayLBA*sectorSize); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read GPT entries at LBA %d: %w", arrayLBA, err)
	}
	if crc32.ChecksumIEEE(arr) != binary.LittleEndian.Uint32(h[88:]) {
		return nil, fmt.Errorf("GPT entries at LBA %d: checksum mismatch: %w", arrayLBA, ErrCorrupt)
	}
	var out []volume
	for i := 0; i < int(count); i++ {
		e := arr[i*int(esize):]
		if isZero(e[:16]) { // unused entry: no type GUID
			continue
		}
		first, last := binary.LittleEndian.Uint64(e[32:]), binary.LittleEndian.Uint64(e[40:])
		if last < first || first > uint64(size/sectorSize) {
			continue
		}
		last = min(last, uint64(size/sectorSize)) // also keeps the byte count below from overflowing
		if v, ok := clip("p"+strconv.Itoa(i+1), int64(first)*sectorSize, int64(last-first+1)*sectorSize, size); ok {
			out = append(out, v)
		}
	}
	return out, nil
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
