package vmdk

import (
	"bytes"
	"fmt"
	"testing"
)

// boundsOnly is a disk that keeps nothing and fails a write outside its capacity.
type boundsOnly struct{ capacity int64 }

func (b boundsOnly) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > b.capacity {
		return 0, fmt.Errorf("write of %d bytes at %d beyond the capacity %d", len(p), off, b.capacity)
	}
	return len(p), nil
}

// Reader takes outside bytes (an import's upload): whatever they are, it returns an error or
// writes only inside the disk, and never panics.
func FuzzReader(f *testing.F) {
	for _, tc := range []struct {
		size int64
		runs [][2]int64
	}{{4096, nil}, {3*GrainSize + 512, [][2]int64{{0, 100}, {2*GrainSize + 7, 3000}}}, {gtCoverage + GrainSize, [][2]int64{{gtCoverage, 10}}}} {
		var buf bytes.Buffer
		if _, err := Write(f.Context(), &buf, bytes.NewReader(image(tc.size, tc.runs...)), tc.size, Options{}); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader(bytes.NewReader(data))
		if err != nil {
			return
		}
		st, err := r.WriteTo(boundsOnly{r.Capacity()})
		if err == nil && (st.StreamSize > int64(len(data)) || st.WrittenBytes > r.Capacity()) {
			t.Fatalf("stats %+v for %d bytes of stream, capacity %d", st, len(data), r.Capacity())
		}
	})
}
