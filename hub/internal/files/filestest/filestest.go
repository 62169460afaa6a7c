// Package filestest builds real filesystem images for tests, without mounting anything: a
// source tree with the cases file-level restore must get right, an ext4 filesystem made of it
// by mkfs.ext4 -d, and disks holding filesystems behind MBR or GPT partition tables.
package filestest

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/testenv"
)

// ManyEntries is the number of files in the directory "many" of Tree.
const ManyEntries = 10000

// Tree makes a source tree in dir, which must not exist yet: a file larger than a 4 MiB
// chunk (big.bin, 9 MiB + 123 bytes), a sparse file (sparse.img: 4 KiB, a 20 MiB hole, 4 KiB),
// symlinks (fast and slow), a directory of ManyEntries files, non-ASCII names, nested
// directories, several modes and mtimes with nanoseconds.
func Tree(t testing.TB, dir string) {
	t.Helper()
	mk := func(p string, data []byte, mode os.FileMode) {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, mode); err != nil {
			t.Fatal(err)
		}
	}
	big := make([]byte, 9<<20+123)
	_, _ = rand.Read(big)
	mk("big.bin", big, 0o644)
	mk("etc/hosts", []byte("127.0.0.1 localhost\n::1 localhost\n"), 0o644)
	mk("etc/shadow", []byte("root:*:19000:0:99999:7:::\n"), 0o600)
	mk("bin/run.sh", []byte("#!/bin/sh\necho hi\n"), 0o755)
	mk("données/日本語.txt", []byte("こんにちは\n"), 0o644)
	mk("Ünïcödé ñame/emoji 🙂.txt", []byte("smile\n"), 0o640)
	mk("a/b/c/d/e/f/deep.txt", []byte("deep\n"), 0o644)
	mk("empty", nil, 0o644)

	// Sparse: data, a hole of 20 MiB, data.
	sp := filepath.Join(dir, "sparse.img")
	f, err := os.Create(sp)
	if err != nil {
		t.Fatal(err)
	}
	head, tail := bytes.Repeat([]byte("H"), 4096), bytes.Repeat([]byte("T"), 4096)
	if _, err := f.WriteAt(head, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(tail, 4096+20<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	for i := range ManyEntries {
		name := filepath.Join(dir, "many", fmt.Sprintf("entry-%05d", i))
		if i == 0 {
			if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		var data []byte
		if i%1000 == 7 {
			data = []byte(fmt.Sprintf("file %d\n", i))
		}
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("etc/hosts", filepath.Join(dir, "hosts-link")); err != nil {
		t.Fatal(err)
	}
	long := "a/b/c/d/e/f/" + string(bytes.Repeat([]byte("x"), 100)) + "/../deep.txt" // over 60 bytes: stored in a block
	if err := os.Symlink(long, filepath.Join(dir, "long-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../etc/passwd", filepath.Join(dir, "etc", "escape-link")); err != nil {
		t.Fatal(err)
	}
	// Fixed mtimes with nanoseconds, after everything below each directory was written.
	when := time.Date(2024, 2, 29, 12, 34, 56, 789012345, time.UTC)
	for _, p := range []string{"etc/hosts", "big.bin", "données/日本語.txt", "a/b/c/d/e/f/deep.txt", "a/b/c", "etc"} {
		if err := os.Chtimes(filepath.Join(dir, p), when, when); err != nil {
			t.Fatal(err)
		}
		when = when.Add(-time.Hour * 24 * 400)
	}
}

// MkfsExt4 makes an ext4 filesystem of size bytes holding the tree src (mkfs.ext4 -d) and
// returns its bytes. It skips, or fails under SENDENSE_TEST_STRICT, without mkfs.ext4
// (Debian: e2fsprogs).
func MkfsExt4(t testing.TB, src string, size int64, extra ...string) []byte {
	t.Helper()
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		if p := "/usr/sbin/mkfs.ext4"; fileExists(p) {
			mkfs = p
		} else {
			testenv.Skip(t, "mkfs.ext4 not found (Debian: apt install e2fsprogs)")
		}
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	args := append([]string{"-q", "-F", "-b", "4096", "-I", "256", "-d", src}, extra...)
	args = append(args, img, fmt.Sprintf("%dk", size>>10))
	cmd := exec.Command(mkfs, args...)
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME=1700000000")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %v: %v\n%s", args, err, out)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Partition alignment and the space a GPT takes at each end of a disk.
const (
	align  = 1 << 20
	sector = 512
)

func alignUp(n int64) int64 { return (n + align - 1) / align * align }

// MBRDisk returns a disk holding each volume as a primary partition (at most 4), numbered p1,
// p2, … in order, 1 MiB aligned, type 0x83.
func MBRDisk(vols ...[]byte) []byte {
	if len(vols) > 4 {
		panic("MBRDisk: more than 4 primary partitions")
	}
	size := int64(align)
	for _, v := range vols {
		size += alignUp(int64(len(v)))
	}
	disk := make([]byte, size)
	off := int64(align)
	for i, v := range vols {
		e := disk[446+16*i:]
		e[4] = 0x83
		binary.LittleEndian.PutUint32(e[8:], uint32(off/sector))
		binary.LittleEndian.PutUint32(e[12:], uint32((int64(len(v))+sector-1)/sector))
		copy(disk[off:], v)
		off += alignUp(int64(len(v)))
	}
	disk[510], disk[511] = 0x55, 0xaa
	return disk
}

// GPTDisk returns a disk with a protective MBR, primary and backup GPTs of 128 entries, and
// each volume as a partition numbered p1, p2, … in order, 1 MiB aligned.
func GPTDisk(vols ...[]byte) []byte {
	size := int64(align)
	for _, v := range vols {
		size += alignUp(int64(len(v)))
	}
	size += align // room for the backup GPT
	disk := make([]byte, size)
	le := binary.LittleEndian
	// Protective MBR.
	e := disk[446:]
	e[4] = 0xee
	le.PutUint32(e[8:], 1)
	le.PutUint32(e[12:], uint32(min(size/sector-1, 0xffffffff)))
	disk[510], disk[511] = 0x55, 0xaa

	entries := make([]byte, 128*128)
	linux := []byte{0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4}
	off := int64(align)
	for i, v := range vols {
		en := entries[128*i:]
		copy(en[0:16], linux)
		_, _ = rand.Read(en[16:32])
		le.PutUint64(en[32:], uint64(off/sector))
		le.PutUint64(en[40:], uint64((off+int64(len(v))+sector-1)/sector-1))
		copy(disk[off:], v)
		off += alignUp(int64(len(v)))
	}
	last := size/sector - 1
	header := func(self, other, array int64) []byte {
		h := make([]byte, sector)
		copy(h, "EFI PART")
		le.PutUint32(h[8:], 0x00010000)
		le.PutUint32(h[12:], 92)
		le.PutUint64(h[24:], uint64(self))
		le.PutUint64(h[32:], uint64(other))
		le.PutUint64(h[40:], 34)
		le.PutUint64(h[48:], uint64(last-33))
		_, _ = rand.Read(h[56:72])
		le.PutUint64(h[72:], uint64(array))
		le.PutUint32(h[80:], 128)
		le.PutUint32(h[84:], 128)
		le.PutUint32(h[88:], crc32.ChecksumIEEE(entries))
		le.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
		return h
	}
	copy(disk[sector:], header(1, last, 2))
	copy(disk[2*sector:], entries)
	copy(disk[(last-32)*sector:], entries)
	copy(disk[last*sector:], header(last, 1, last-32))
	return disk
}

// Node is what a file of a source tree should read back as.
type Node struct {
	Type   string // file, dir, symlink, other
	Size   int64  // files and symlinks
	Mode   uint32 // permission bits (07777)
	Mtime  time.Time
	Target string // symlinks
}

// Nodes describes every node below src by its path relative to src ("etc/hosts").
func Nodes(t testing.TB, src string) map[string]Node {
	t.Helper()
	out := map[string]Node{}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == src {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		// mkfs.ext4 -d keeps whole seconds of mtimes.
		n := Node{Mode: uint32(fi.Mode().Perm()), Mtime: fi.ModTime().UTC().Truncate(time.Second)}
		if fi.Mode()&os.ModeSetuid != 0 {
			n.Mode |= 0o4000
		}
		switch {
		case fi.Mode().IsRegular():
			n.Type, n.Size = "file", fi.Size()
		case fi.IsDir():
			n.Type = "dir"
		case fi.Mode()&os.ModeSymlink != 0:
			n.Type = "symlink"
			if n.Target, err = os.Readlink(p); err != nil {
				return err
			}
			n.Size = int64(len(n.Target))
		default:
			n.Type = "other"
		}
		out[filepath.ToSlash(rel)] = n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
