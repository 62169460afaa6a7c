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
	"path"
	"path/filepath"
	"strconv"
	"strings"
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

// MkfsXFS makes an XFS filesystem (version 5, the defaults of mkfs.xfs) of size bytes holding
// the tree src and returns its bytes. mkfs.xfs -p fills it from a protofile; what a protofile
// cannot say is then written into the image: mtimes (to the second, like MkfsExt4, through
// inode numbers xfs_db lists) and names holding white space (made with '_' in their place, then
// renamed in the short-form directories that hold them; a name with white space in a larger
// directory is refused). A sparse source file is written whole: the protofile of mkfs.xfs 6.1
// allocates every block. It skips, or fails under SENDENSE_TEST_STRICT, without mkfs.xfs and
// xfs_db (Debian: xfsprogs).
func MkfsXFS(t testing.TB, src string, size int64, extra ...string) []byte {
	t.Helper()
	mkfs, xfsdb := lookSbin("mkfs.xfs"), lookSbin("xfs_db")
	if mkfs == "" || xfsdb == "" {
		testenv.Skip(t, "mkfs.xfs or xfs_db not found (Debian: apt install xfsprogs)")
	}
	work := t.TempDir()
	var proto bytes.Buffer
	proto.WriteString("/dev/null\n0 0\nd--755 0 0\n")
	var dirs []string              // every directory, placeholder names, "" the root
	renames := map[string]string{} // placeholder name → real name
	nfile := 0
	var walk func(rel, prel string)
	walk = func(rel, prel string) {
		dirs = append(dirs, prel)
		entries, err := os.ReadDir(filepath.Join(src, rel))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			name := e.Name()
			pname := strings.Map(func(r rune) rune {
				if r == ' ' || r == '\t' {
					return '_'
				}
				return r
			}, name)
			if pname != name {
				renames[pname] = name
			}
			full := filepath.Join(src, rel, name)
			fi, err := os.Lstat(full)
			if err != nil {
				t.Fatal(err)
			}
			perm := fmt.Sprintf("%03o", fi.Mode().Perm())
			suid := "-"
			if fi.Mode()&os.ModeSetuid != 0 {
				suid = "u"
			}
			switch {
			case fi.IsDir():
				fmt.Fprintf(&proto, "%s d%s-%s 0 0\n", pname, suid, perm)
				walk(path.Join(rel, name), path.Join(prel, pname))
				proto.WriteString("$\n")
			case fi.Mode().IsRegular():
				// The protofile splits on white space: each file is named by a link without any.
				link := filepath.Join(work, fmt.Sprintf("f%d", nfile))
				nfile++
				if err := os.Symlink(full, link); err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&proto, "%s -%s-%s 0 0 %s\n", pname, suid, perm, link)
			case fi.Mode()&os.ModeSymlink != 0:
				target, err := os.Readlink(full)
				if err != nil {
					t.Fatal(err)
				}
				if strings.ContainsAny(target, " \t\n") {
					t.Fatalf("MkfsXFS: symlink %s: a target with white space cannot be written", full)
				}
				fmt.Fprintf(&proto, "%s l--%s 0 0 %s\n", pname, perm, target)
			}
		}
	}
	real := func(p string) string { // placeholder path → source path
		parts := strings.Split(p, "/")
		for i, n := range parts {
			if r, ok := renames[n]; ok {
				parts[i] = r
			}
		}
		return strings.Join(parts, "/")
	}
	walk("", "")
	proto.WriteString("$\n")
	protoFile := filepath.Join(work, "proto")
	if err := os.WriteFile(protoFile, proto.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(work, "fs.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-q", "-f", "-p", protoFile}, extra...)
	args = append(args, img)
	cmd := exec.Command(mkfs, args...)
	// mkfs.xfs refuses filesystems under 300 MB unless it runs under xfsprogs' own test suite,
	// which these variables announce.
	cmd.Env = append(os.Environ(), "TEST_DIR=1", "TEST_DEV=1", "QA_CHECK_FS=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs %v: %v\n%s", args, err, out)
	}

	// Inode numbers of every node, from xfs_db's listing of each directory.
	var script bytes.Buffer
	for _, d := range dirs {
		fmt.Fprintf(&script, "path /%s\nls\n", d)
	}
	cmd = exec.Command(xfsdb, "-r", img)
	cmd.Stdin = &script
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xfs_db: %v\n%s", err, out)
	}
	inos := map[string]uint64{} // placeholder path → inode
	di := -1
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 7 {
			continue
		}
		name := strings.Join(f[5:len(f)-1], " ")
		ino, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			t.Fatalf("xfs_db listing %q: %v", line, err)
		}
		switch name {
		case ".":
			di++
			if di >= len(dirs) {
				t.Fatalf("xfs_db listed more directories than %d", len(dirs))
			}
		case "..":
		default:
			if di < 0 {
				t.Fatalf("xfs_db listing %q before a directory", line)
			}
			inos[path.Join(dirs[di], name)] = ino
		}
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	g := xfsGeometry(t, b)
	for p, ino := range inos {
		fi, err := os.Lstat(filepath.Join(src, real(p)))
		if err != nil {
			t.Fatalf("%s (inode %d): %v", p, ino, err)
		}
		off := g.inodeOff(ino)
		in := b[off : off+g.inodeSize]
		sec := fi.ModTime().Unix()
		ts := in[40:48]
		if binary.BigEndian.Uint64(in[120:])&0x8 != 0 { // bigtime
			binary.BigEndian.PutUint64(ts, uint64(sec+1<<31)*1e9)
		} else {
			binary.BigEndian.PutUint32(ts, uint32(sec))
			binary.BigEndian.PutUint32(ts[4:], 0)
		}
		xfsInodeCRC(in)
	}
	for pname, name := range renames {
		at := bytes.Index(b, []byte(pname))
		if at < 0 || bytes.Index(b[at+1:], []byte(pname)) >= 0 {
			t.Fatalf("MkfsXFS: the name %q is not once in the image", pname)
		}
		in := b[at-at%int(g.inodeSize):][:g.inodeSize]
		if string(in[:2]) != "IN" || in[5] != 1 {
			t.Fatalf("MkfsXFS: the name %q is not in a short-form directory", pname)
		}
		copy(b[at:], name)
		xfsInodeCRC(in)
	}
	// The image as patched must still be one xfs_repair finds nothing wrong with.
	if repair := lookSbin("xfs_repair"); repair != "" {
		if err := os.WriteFile(img, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(repair, "-n", "-f", img).CombinedOutput(); err != nil {
			t.Fatalf("xfs_repair -n: %v\n%s", err, out)
		}
	}
	return b
}

type xfsGeo struct {
	bs, inodeSize, agblocks int64
	agblklog, inopblog      uint
}

func xfsGeometry(t testing.TB, b []byte) xfsGeo {
	be := binary.BigEndian
	if string(b[:4]) != "XFSB" {
		t.Fatal("MkfsXFS: no superblock")
	}
	return xfsGeo{bs: int64(be.Uint32(b[4:])), inodeSize: int64(be.Uint16(b[104:])), agblocks: int64(be.Uint32(b[84:])), agblklog: uint(b[124]), inopblog: uint(b[123])}
}

func (g xfsGeo) inodeOff(ino uint64) int64 {
	ag := int64(ino >> (g.agblklog + g.inopblog))
	agbno := int64(ino>>g.inopblog) & (1<<g.agblklog - 1)
	return (ag*g.agblocks+agbno)*g.bs + int64(ino&(1<<g.inopblog-1))*g.inodeSize
}

// xfsInodeCRC stores the CRC32C of a version 3 inode.
func xfsInodeCRC(in []byte) {
	binary.LittleEndian.PutUint32(in[100:], 0)
	binary.LittleEndian.PutUint32(in[100:], crc32.Checksum(in, crc32.MakeTable(crc32.Castagnoli)))
}

func lookSbin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := "/usr/sbin/" + name; fileExists(p) {
		return p
	}
	return ""
}
