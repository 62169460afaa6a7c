package lab

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// dataExtents returns the allocated areas of f inside [start, end), merged, from the file
// system's SEEK_DATA/SEEK_HOLE answers (block granularity, 4 KiB on ext4).
func dataExtents(f *os.File, start, end int64) ([]Extent, error) {
	var out []Extent
	for off := start; off < end; {
		data, err := f.Seek(off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data past off
		}
		if err != nil {
			return nil, fmt.Errorf("seek data in %s from %d: %w", f.Name(), off, err)
		}
		if data >= end {
			break
		}
		hole, err := f.Seek(data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("seek hole in %s from %d: %w", f.Name(), data, err)
		}
		hole = min(hole, end)
		if n := len(out); n > 0 && out[n-1].End() == data {
			out[n-1].Length = hole - out[n-1].Offset
		} else {
			out = append(out, Extent{Offset: data, Length: hole - data})
		}
		off = hole
	}
	return out, nil
}
