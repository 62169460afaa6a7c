package restore

import (
	"bytes"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// ToFile reserves space for the non-zero slots only: the zero slots stay holes, and the file
// holds no more blocks than its data needs.
func TestToFileReservesOnlyTheDataSlots(t *testing.T) {
	img := testImage(t) // slots 2 and 3 are zero
	repo, ref := storeImage(t, img)
	im, f := openForRestore(t, repo, ref)
	defer f.Close()
	if err := im.ToFile(t.Context(), f, 2, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(f.Name()); !bytes.Equal(got, img) {
		t.Fatal("restored file differs")
	}
	hole, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE)
	if err != nil {
		t.Fatal(err)
	}
	data, err := unix.Seek(int(f.Fd()), 2*slot, unix.SEEK_DATA)
	if err != nil {
		t.Fatal(err)
	}
	if hole != 2*slot || data != 4*slot {
		t.Fatalf("first hole at %d, data again at %d; want the zero slots [%d, %d) a hole", hole, data, 2*slot, 4*slot)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	// The data rounded up to 4 KiB blocks, plus a block of slack for the file system.
	if want := int64(len(img)-2*slot+4096) &^ 4095; st.Blocks*512 > want+4096 {
		t.Fatalf("the file holds %d bytes of blocks, its data needs %d", st.Blocks*512, want)
	}
}
