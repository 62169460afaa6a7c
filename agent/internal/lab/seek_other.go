//go:build !linux

package lab

import (
	"fmt"
	"os"
)

// dataExtents reports the whole of [start, end) that lies inside f as allocated: without
// SEEK_DATA the lab cannot tell holes from data.
func dataExtents(f *os.File, start, end int64) ([]Extent, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	end = min(end, fi.Size())
	if start >= end {
		return nil, nil
	}
	return []Extent{{Offset: start, Length: end - start}}, nil
}
