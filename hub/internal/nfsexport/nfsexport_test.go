package nfsexport

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"

	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/nfstest"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/shared/chunk"
)

// The tests use a Go NFSv3 client (github.com/willscott/go-nfs-client): this machine's
// kernel has no NFS client (no "nfs" in /proc/filesystems, no modules to load), so a kernel
// mount cannot be tried here.

const slot = 64 << 10

var loopback = netip.MustParseAddr("127.0.0.1")

// restorePoint writes img into a new repository as one backup's disk and returns the verified
// image reader of that restore point and the repository's directory.
func restorePoint(t *testing.T, img []byte, diskID string) (*restore.Image, string) {
	t.Helper()
	return restorePointSlots(t, img, diskID, slot)
}

// restorePointSlots is restorePoint with slots of slotSize bytes.
func restorePointSlots(t *testing.T, img []byte, diskID string, slotSize int64) (*restore.Image, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	repo, err := repository.InitDir(t.Context(), dir, slotSize, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = repo.Close() })
	idx, err := fidx.New(int64(len(img)), slotSize)
	if err != nil {
		t.Fatal(err)
	}
	for i := range idx.SlotCount() {
		p := img[idx.SlotOffset(i) : idx.SlotOffset(i)+int64(idx.SlotLen(i))]
		d := chunk.Sum(p)
		idx.Digests[i] = d
		if d == chunk.ZeroDigest(len(p)) {
			continue
		}
		blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(p), p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := repo.PutChunk(t.Context(), d, blob); err != nil {
			t.Fatal(err)
		}
	}
	ref := repository.IndexRef{VMUUID: "vm", DiskID: diskID, BackupID: "bk-1"}
	if _, err := repo.WriteIndex(t.Context(), ref, idx); err != nil {
		t.Fatal(err)
	}
	im, err := restore.OpenImage(t.Context(), repo, ref)
	if err != nil {
		t.Fatal(err)
	}
	return im, dir
}

// diskImage is a disk of random bytes with a zero run (stored as no chunk) and a last slot
// shorter than the others.
func diskImage(t *testing.T, slots int) []byte {
	img := make([]byte, slots*slot+1024)
	_, _ = rand.Read(img)
	clear(img[slot : 3*slot])
	return img
}

// treeDigest hashes every file under dir with its path.
func treeDigest(t *testing.T, dir string) [32]byte {
	t.Helper()
	h := sha256.New()
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			paths = append(paths, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(paths)
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		h.Write([]byte(p))
		h.Write(b)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// serve starts a server under a temporary root on a loopback port.
func serve(t *testing.T, root string) (*Server, string) {
	t.Helper()
	s, err := New(root, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(t.Context(), ln) }()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return s, ln.Addr().String()
}

// mount mounts export path p at addr with the Go client, as the ESXi host would.
func mount(t *testing.T, addr, p string) (*nfsc.Target, error) {
	t.Helper()
	c, err := nfstest.Dial(addr)
	if err != nil {
		return nil, err
	}
	t.Cleanup(c.Close)
	m := nfsc.Mount{Client: c}
	return m.Mount(p, rpc.AuthNull)
}

func mustMount(t *testing.T, addr, p string) *nfsc.Target {
	t.Helper()
	tg, err := mount(t, addr, p)
	if err != nil {
		t.Fatalf("mount %s: %v", p, err)
	}
	return tg
}

func readFile(t *testing.T, tg *nfsc.Target, name string, size int64) []byte {
	t.Helper()
	f, err := tg.Open(name)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer f.Close()
	got := make([]byte, size)
	if _, err := io.ReadFull(f, got); err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return got
}

func TestServesEveryDiskByteIdentical(t *testing.T) {
	img1, img2 := diskImage(t, 9), diskImage(t, 3)
	im1, _ := restorePoint(t, img1, "disk-2000")
	im2, _ := restorePoint(t, img2, "disk-2001")
	vmx := []byte(".encoding = \"UTF-8\"\ndisplayName = \"web01\"\n")
	s, addr := serve(t, t.TempDir())
	start := time.Now()
	err := s.Add(Export{
		ID: "ir-one", Folder: "web01", Allowed: []netip.Addr{loopback},
		Files: map[string][]byte{"web01.vmx": vmx},
		Disks: []Disk{
			{Name: "web01", Image: im1.Reader(t.Context()), Size: im1.Size(), SlotSize: slot},
			{Name: "web01_1", Image: im2.Reader(t.Context()), Size: im2.Size(), AdapterType: "buslogic"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	tg := mustMount(t, addr, Path("ir-one"))
	first, err := tg.Open("web01/web01-flat.vmdk")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	t.Logf("export to first byte over NFS: %v", time.Since(start))

	entries, err := tg.ReadDirPlus("/web01")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Name() != "." && e.Name() != ".." {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	want := "web01-flat.vmdk web01.vmdk web01.vmx web01_1-flat.vmdk web01_1.vmdk"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("folder lists %q, want %q", got, want)
	}
	if got := readFile(t, tg, "web01/web01.vmx", int64(len(vmx))); !bytes.Equal(got, vmx) {
		t.Fatalf("vmx reads %q", got)
	}
	desc := Descriptor(Disk{Name: "web01_1", Size: im2.Size(), AdapterType: "buslogic"})
	if got := readFile(t, tg, "web01/web01_1.vmdk", int64(len(desc))); !bytes.Equal(got, desc) {
		t.Fatalf("descriptor reads %q", got)
	}
	if !bytes.Contains(desc, []byte(`RW 386 VMFS "web01_1-flat.vmdk"`)) || !bytes.Contains(desc, []byte(`ddb.adapterType = "buslogic"`)) {
		t.Fatalf("descriptor does not name its extent and adapter:\n%s", desc)
	}
	for name, img := range map[string][]byte{"web01/web01-flat.vmdk": img1, "web01/web01_1-flat.vmdk": img2} {
		fi, _, err := tg.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != int64(len(img)) {
			t.Fatalf("%s: size %d, want %d", name, fi.Size(), len(img))
		}
		if got := readFile(t, tg, name, int64(len(img))); !bytes.Equal(got, img) {
			t.Fatalf("%s differs from the restore point", name)
		}
	}
}

func TestWritesStayInTheOverlay(t *testing.T) {
	img := diskImage(t, 9)
	im, repoDir := restorePoint(t, img, "disk-2000")
	before := treeDigest(t, repoDir)
	root := t.TempDir()
	s, addr := serve(t, root)
	e := Export{
		ID: "ir-cow", Folder: "db", Allowed: []netip.Addr{loopback},
		Disks: []Disk{{Name: "db", Image: im.Reader(t.Context()), Size: im.Size(), SlotSize: slot}},
	}
	if err := s.Add(e); err != nil {
		t.Fatal(err)
	}
	tg := mustMount(t, addr, Path("ir-cow"))
	want := bytes.Clone(img)
	// Unaligned writes: inside one block, across a block boundary into the zero run, and
	// the disk's last bytes.
	writes := []struct {
		off int64
		n   int
	}{{100, 10}, {slot - 7, 3 * slot}, {int64(len(img)) - 300, 300}}
	for _, w := range writes {
		p := make([]byte, w.n)
		_, _ = rand.Read(p)
		copy(want[w.off:], p)
		f, err := tg.OpenFile("db/db-flat.vmdk", 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Seek(w.off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(p); err != nil {
			t.Fatalf("write %d bytes at %d: %v", w.n, w.off, err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if got := readFile(t, tg, "db/db-flat.vmdk", int64(len(img))); !bytes.Equal(got, want) {
		t.Fatal("reads do not see the writes over the restore point")
	}
	// ESXi also creates files of its own in the folder.
	lf, err := tg.OpenFile("db/vmware.log", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lf.Write([]byte("powered on\n")); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	// A flat file cannot be removed or replaced.
	if err := tg.Remove("db/db-flat.vmdk"); err == nil {
		t.Fatal("removing a flat file succeeded")
	}

	used, err := s.OverlayBytes("ir-cow")
	if err != nil {
		t.Fatal(err)
	}
	// Blocks 0 to 3 and the short last one, and the log ESXi wrote.
	if want := int64(4*slot + 1024 + 11); used != want {
		t.Fatalf("overlay holds %d bytes, want %d", used, want)
	}
	if treeDigest(t, repoDir) != before {
		t.Fatal("the repository changed")
	}
	fresh := make([]byte, len(img))
	if _, err := im.ReadAt(t.Context(), fresh, 0); err != nil {
		t.Fatalf("the restore point no longer reads back verified: %v", err)
	}
	if !bytes.Equal(fresh, img) {
		t.Fatal("the restore point reads back changed")
	}

	// A restart: the session is re-served from its folder and overlay, writes kept.
	if err := s.Remove("ir-cow", false); err != nil {
		t.Fatal(err)
	}
	s2, addr2 := serve(t, root)
	if err := s2.Add(e); err != nil {
		t.Fatal(err)
	}
	if used2, _ := s2.OverlayBytes("ir-cow"); used2 != used {
		t.Fatalf("after a restart the overlay counts %d bytes, want %d", used2, used)
	}
	tg2 := mustMount(t, addr2, Path("ir-cow"))
	if got := readFile(t, tg2, "db/db-flat.vmdk", int64(len(img))); !bytes.Equal(got, want) {
		t.Fatal("after a restart reads do not see the writes")
	}
	if got := readFile(t, tg2, "db/vmware.log", 11); string(got) != "powered on\n" {
		t.Fatalf("after a restart the log reads %q", got)
	}
	// Dropping the session deletes its folder and overlay.
	if err := s2.Remove("ir-cow", true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "ir-cow")); !os.IsNotExist(err) {
		t.Fatalf("session directory left after drop: %v", err)
	}
	// With no session left for it, the host is hung up on.
	hungUp(t, addr2)
}

func TestOverlayBoundIsEnforced(t *testing.T) {
	img := diskImage(t, 9)
	im, _ := restorePoint(t, img, "disk-2000")
	s, addr := serve(t, t.TempDir())
	err := s.Add(Export{
		ID: "ir-small", Folder: "d", Allowed: []netip.Addr{loopback}, OverlayLimit: 2 * slot,
		Disks: []Disk{{Name: "d", Image: im.Reader(t.Context()), Size: im.Size()}},
	})
	if err != nil {
		t.Fatal(err)
	}
	tg := mustMount(t, addr, Path("ir-small"))
	write := func(off int64, n int) error {
		f, err := tg.OpenFile("d/d-flat.vmdk", 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		_, err = f.Write(bytes.Repeat([]byte{0xa5}, n))
		return err
	}
	if err := write(0, 2*slot); err != nil {
		t.Fatalf("writing within the bound: %v", err)
	}
	err = write(5*slot, 10)
	if err == nil || !strings.Contains(err.Error(), "DQUOT") {
		t.Fatalf("a write past the bound: err = %v, want a quota error", err)
	}
	if err := write(slot+5, 100); err != nil {
		t.Fatalf("rewriting a block already in the overlay: %v", err)
	}
	if used, _ := s.OverlayBytes("ir-small"); used != 2*slot {
		t.Fatalf("overlay holds %d bytes, want %d", used, 2*slot)
	}
	got := readFile(t, tg, "d/d-flat.vmdk", int64(len(img)))
	if !bytes.Equal(got[5*slot:6*slot], img[5*slot:6*slot]) {
		t.Fatal("the refused write changed the disk")
	}
}

func TestOnlyNamedHostsMayMount(t *testing.T) {
	im, _ := restorePoint(t, diskImage(t, 3), "disk-2000")
	s, addr := serve(t, t.TempDir())
	disk := []Disk{{Name: "d", Image: im.Reader(t.Context()), Size: im.Size()}}
	other := netip.MustParseAddr("192.0.2.10")
	if err := s.Add(Export{ID: "ir-theirs", Folder: "d", Allowed: []netip.Addr{other}, Disks: disk}); err != nil {
		t.Fatal(err)
	}
	// A client no session names is hung up on before anything it sends is decoded.
	hungUp(t, addr)
	if err := s.Add(Export{ID: "ir-ours", Folder: "d", Allowed: []netip.Addr{loopback}, Disks: disk}); err != nil {
		t.Fatal(err)
	}
	// With a session of its own, the client is answered (the check above can tell), and still
	// mounts only that one.
	if err := nfstest.HungUp(addr); err == nil {
		t.Fatal("a host a session names was hung up on")
	}
	if _, err := mount(t, addr, Path("ir-theirs")); err == nil || !strings.Contains(err.Error(), "ACCES") {
		t.Fatalf("mounting another host's export: err = %v, want MNT3ERR_ACCES", err)
	}
	mustMount(t, addr, Path("ir-ours"))
	// A handle of the other session, made up by the client, is refused too.
	c, err := nfstest.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fh := make([]byte, handleSize)
	putUint64(fh[:8], hash64("ir-theirs"))
	putUint64(fh[8:], hash64("d/d-flat.vmdk"))
	tg, err := nfsc.NewTargetWithClient(c, rpc.AuthNull, fh, "/", 0)
	if err == nil {
		if _, err = tg.GetAttr(fh); err == nil {
			t.Fatal("a forged handle of another host's export was served")
		}
	}
}

// Measured, not asserted: a guest's 64 KiB sequential reads of a disk with 4 MiB slots (the
// default) over NFS, with and without the slot cache.
func TestSmallReadRate(t *testing.T) {
	img := make([]byte, 64<<20)
	_, _ = rand.Read(img)
	im, _ := restorePointSlots(t, img, "disk-2000", 4<<20)
	s, addr := serve(t, t.TempDir())
	for _, c := range []struct {
		id   string
		slot int64
	}{{"ir-cached", 4 << 20}, {"ir-direct", 0}} {
		if err := s.Add(Export{ID: c.id, Folder: "d", Allowed: []netip.Addr{loopback},
			Disks: []Disk{{Name: "d", Image: im.Reader(t.Context()), Size: im.Size(), SlotSize: c.slot}}}); err != nil {
			t.Fatal(err)
		}
		tg := mustMount(t, addr, Path(c.id))
		f, err := tg.Open("d/d-flat.vmdk")
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64<<10)
		start := time.Now()
		var n int64
		for n < int64(len(img)) {
			k, err := f.Read(buf)
			if k > 0 && !bytes.Equal(buf[:k], img[n:n+int64(k)]) {
				t.Fatalf("%s: bytes at %d differ", c.id, n)
			}
			n += int64(k)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
		t.Logf("%s: 64 KiB sequential reads of %d MiB with 4 MiB slots: %.1f MB/s", c.id, n>>20, float64(n)/time.Since(start).Seconds()/1e6)
	}
}

// A client cannot make links in an export: one could point outside the folder between the
// export's check of a path and its open.
func TestSymlinksAreRefused(t *testing.T) {
	dir := t.TempDir()
	s := &sessionFS{Filesystem: osfs.New(dir, osfs.WithBoundOS())}
	if err := s.Symlink("/etc", "etc"); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("symlink: %v, want EPERM", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "etc")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the refused link exists: %v", err)
	}
}

// Offsets an NFS client can send (up to 2^64-1, read as negative) or that overflow with the
// length are refused, never a panic that would stop the hub.
func TestDiskOffsetsOutOfRange(t *testing.T) {
	base := bytes.NewReader(make([]byte, 1<<20))
	d, err := openCOW(filepath.Join(t.TempDir(), "overlay"), base, 1<<20, &budget{limit: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 64)
	for _, off := range []int64{-1, -1 << 20, math.MinInt64} {
		if _, err := d.ReadAt(p, off); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("read at %d: %v, want EINVAL", off, err)
		}
		if _, err := d.WriteAt(p, off); !errors.Is(err, syscall.EFBIG) {
			t.Errorf("write at %d: %v, want EFBIG", off, err)
		}
	}
	for _, off := range []int64{math.MaxInt64 - 16, math.MaxInt64, 1<<20 - 63} {
		if _, err := d.WriteAt(p, off); !errors.Is(err, syscall.EFBIG) {
			t.Errorf("write of 64 bytes at %d: %v, want EFBIG", off, err)
		}
	}
	if n, err := d.ReadAt(p, math.MaxInt64); n != 0 || err != io.EOF {
		t.Errorf("read at 2^63-1: %d, %v; want 0, EOF", n, err)
	}
}

func hungUp(t *testing.T, addr string) {
	t.Helper()
	if err := nfstest.HungUp(addr); err != nil {
		t.Fatal(err)
	}
}

// The files a client writes in the folder besides the flat disks (ESXi's swap, a snapshot's
// delta disk) count against the session's overlay limit; removing or shrinking them gives the
// bytes back.
func TestOtherFilesCountAgainstTheLimit(t *testing.T) {
	dir := t.TempDir()
	b := &budget{limit: 64 << 10}
	s := &sessionFS{Filesystem: osfs.New(dir, osfs.WithBoundOS()), budget: b}
	f, err := s.Create("vm-000001-sesparse.vmdk")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 48<<10)); err != nil {
		t.Fatalf("a write within the limit: %v", err)
	}
	if _, err := f.Write(make([]byte, 32<<10)); !errors.Is(err, syscall.EDQUOT) {
		t.Fatalf("a write past the limit: %v, want EDQUOT", err)
	}
	if got := b.used.Load(); got != 48<<10 {
		t.Fatalf("budget used %d, want %d", got, 48<<10)
	}
	// Rewriting bytes the file has costs nothing.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 16<<10)); err != nil || b.used.Load() != 48<<10 {
		t.Fatalf("a rewrite: %v, used %d", err, b.used.Load())
	}
	if err := f.Truncate(1 << 30); !errors.Is(err, syscall.EDQUOT) {
		t.Fatalf("growing past the limit by truncate: %v, want EDQUOT", err)
	}
	if err := f.Truncate(16 << 10); err != nil || b.used.Load() != 16<<10 {
		t.Fatalf("shrinking: %v, used %d, want %d", err, b.used.Load(), 16<<10)
	}
	f.Close()
	if err := s.Remove("vm-000001-sesparse.vmdk"); err != nil || b.used.Load() != 0 {
		t.Fatalf("removing: %v, used %d, want 0", err, b.used.Load())
	}
}
