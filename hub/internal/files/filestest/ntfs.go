package filestest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sendense/sendense/shared/testenv"
)

// MkfsNTFS makes an NTFS filesystem of size bytes with mkntfs, fills it through ntfs-3g, the
// NTFS driver of Linux, in user space (FUSE: mkntfs and ntfscp alone cannot make directories),
// and returns its bytes. The tree src (may be "") is copied in: directories, files (runs of
// zeros of 64 KiB left as holes, so sparse files stay sparse), symlinks (ntfs-3g writes them as
// Interix symlinks), mtimes to 100 ns, and the read-only attribute on files without the owner's
// write bit. Then more (may be nil) changes the mounted tree at mnt, with ntfs-3g's options
// compression and streams_interface=windows (named streams as "file:stream"). It skips, or
// fails under SENDENSE_TEST_STRICT, without mkntfs, ntfs-3g or /dev/fuse (Debian: ntfs-3g; the
// test must run as root).
func MkfsNTFS(t testing.TB, src string, size int64, more func(mnt string)) []byte {
	t.Helper()
	mkntfs, ntfs3g := lookSbin("mkntfs"), lookSbin("ntfs-3g")
	if ntfs3g == "" && fileExists("/bin/ntfs-3g") {
		ntfs3g = "/bin/ntfs-3g"
	}
	switch {
	case mkntfs == "" || ntfs3g == "":
		testenv.Skip(t, "mkntfs or ntfs-3g not found (Debian: apt install ntfs-3g)")
	case !fileExists("/dev/fuse") || os.Geteuid() != 0:
		testenv.Skip(t, "ntfs-3g needs /dev/fuse and root to fill an NTFS image")
	}
	work := t.TempDir()
	img := filepath.Join(work, "fs.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkntfs, "-F", "-f", "-q", "-L", "sendense", img).CombinedOutput(); err != nil {
		t.Fatalf("mkntfs: %v\n%s", err, out)
	}
	mnt := filepath.Join(work, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	// In the foreground (no_detach), so that the image is complete once the process has ended.
	cmd := exec.Command(ntfs3g, "-o", "no_detach,compression,streams_interface=windows", img, mnt)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	mounted := false
	unmount := func() {
		if mounted {
			if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v\n%s", mnt, err, out)
			}
			mounted = false
		}
		_ = cmd.Wait()
	}
	defer unmount()
	for deadline := time.Now().Add(10 * time.Second); !mounted; {
		b, _ := os.ReadFile("/proc/self/mounts")
		mounted = bytes.Contains(b, []byte(" "+mnt+" "))
		if !mounted && time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("ntfs-3g did not mount %s:\n%s", img, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if src != "" {
		copyTree(t, src, mnt)
	}
	if more != nil {
		more(mnt)
	}
	unmount()
	if cmd.ProcessState == nil || !cmd.ProcessState.Success() {
		t.Fatalf("ntfs-3g: %v\n%s", cmd.ProcessState, log.String())
	}
	ntfsfix := lookSbin("ntfsfix")
	if ntfsfix == "" && fileExists("/bin/ntfsfix") {
		ntfsfix = "/bin/ntfsfix"
	}
	if ntfsfix != "" {
		// ntfsfix -n checks the volume without changing it.
		if out, err := exec.Command(ntfsfix, "-n", img).CombinedOutput(); err != nil {
			t.Fatalf("ntfsfix -n: %v\n%s", err, out)
		}
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// copyTree copies src into the mounted NTFS at dst, then sets attributes and mtimes, children
// before their directories.
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	var paths []string
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		switch {
		case p == src:
			return nil
		case fi.IsDir():
			if err := os.Mkdir(to, 0o755); err != nil {
				return err
			}
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, to); err != nil {
				return err
			}
		case fi.Mode().IsRegular():
			if err := copySparse(p, to); err != nil {
				return err
			}
			if fi.Mode().Perm()&0o200 == 0 {
				if err := SetNTFSAttributes(to, NTFSReadOnly); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("%s: %v cannot be copied to NTFS", p, fi.Mode())
		}
		paths = append(paths, rel)
		return nil
	})
	if err != nil {
		t.Fatalf("copy %s to NTFS: %v", src, err)
	}
	for i := len(paths) - 1; i >= 0; i-- {
		fi, err := os.Lstat(filepath.Join(src, paths[i]))
		if err != nil {
			t.Fatal(err)
		}
		ts := []unix.Timespec{unix.NsecToTimespec(fi.ModTime().UnixNano()), unix.NsecToTimespec(fi.ModTime().UnixNano())}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dst, paths[i]), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatalf("set mtime of %s: %v", paths[i], err)
		}
	}
}

// copySparse copies the file src to dst, leaving every 64 KiB of zeros a hole.
func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	var off int64
	for {
		n, err := io.ReadFull(in, buf)
		if n > 0 && !isZero(buf[:n]) {
			if _, werr := out.WriteAt(buf[:n], off); werr != nil {
				out.Close()
				return werr
			}
		}
		off += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			out.Close()
			return err
		}
	}
	if err := out.Truncate(off); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// NTFS file attributes (the Windows ones) that SetNTFSAttributes adds.
const (
	NTFSReadOnly   = 0x1
	NTFSCompressed = 0x800
)

// SetNTFSAttributes adds attrs to the Windows file attributes of p on an ntfs-3g mount.
func SetNTFSAttributes(p string, attrs uint32) error {
	b := make([]byte, 4)
	if _, err := unix.Getxattr(p, "system.ntfs_attrib_be", b); err != nil {
		return fmt.Errorf("get attributes of %s: %w", p, err)
	}
	binary.BigEndian.PutUint32(b, binary.BigEndian.Uint32(b)|attrs)
	if err := unix.Setxattr(p, "system.ntfs_attrib_be", b, 0); err != nil {
		return fmt.Errorf("set attributes of %s: %w", p, err)
	}
	return nil
}

// SetNTFSReparse makes p, an empty file or directory on an ntfs-3g mount, a Windows symbolic
// link (junction false: IO_REPARSE_TAG_SYMLINK, relative when target does not start with a
// drive) or a junction (IO_REPARSE_TAG_MOUNT_POINT) to target, a Windows path.
func SetNTFSReparse(p, target string, junction bool) error {
	le := binary.LittleEndian
	enc := func(s string) []byte {
		var b []byte
		for _, u := range utf16Encode(s) {
			b = le.AppendUint16(b, u)
		}
		return b
	}
	sub := target
	relative := !(len(target) >= 2 && target[1] == ':')
	if !relative {
		sub = `\??\` + target
	}
	subB, printB := enc(sub), enc(target)
	var body []byte
	body = le.AppendUint16(body, 0)
	body = le.AppendUint16(body, uint16(len(subB)))
	body = le.AppendUint16(body, uint16(len(subB)))
	body = le.AppendUint16(body, uint16(len(printB)))
	tag := uint32(0xa000000c)
	if junction {
		tag = 0xa0000003
		subB = append(subB, 0, 0) // junctions end each name with a NUL
		body = le.AppendUint16(body[:0], 0)
		body = le.AppendUint16(body, uint16(len(subB)-2))
		body = le.AppendUint16(body, uint16(len(subB)))
		body = le.AppendUint16(body, uint16(len(printB)))
		printB = append(printB, 0, 0)
	} else {
		flags := uint32(0)
		if relative {
			flags = 1
		}
		body = le.AppendUint32(body, flags)
	}
	body = append(append(body, subB...), printB...)
	var d []byte
	d = le.AppendUint32(d, tag)
	d = le.AppendUint16(d, uint16(len(body)))
	d = le.AppendUint16(d, 0)
	d = append(d, body...)
	if err := unix.Setxattr(p, "system.ntfs_reparse_data", d, 0); err != nil {
		return fmt.Errorf("set reparse point of %s: %w", p, err)
	}
	return nil
}

func utf16Encode(s string) []uint16 {
	var out []uint16
	for _, r := range s {
		if r >= 0x10000 {
			r -= 0x10000
			out = append(out, uint16(0xd800+(r>>10)), uint16(0xdc00+(r&0x3ff)))
			continue
		}
		out = append(out, uint16(r))
	}
	return out
}

// NTFSNodes describes every node below src as the NTFS that MkfsNTFS makes of it reads back:
// mtimes to 100 ns, and modes as the reader derives them from Windows attributes (directories
// 0755, files 0644 or 0444 when read-only, symlinks 0777).
func NTFSNodes(t testing.TB, src string) map[string]Node {
	t.Helper()
	nodes := Nodes(t, src)
	for rel, n := range nodes {
		fi, err := os.Lstat(filepath.Join(src, rel))
		if err != nil {
			t.Fatal(err)
		}
		n.Mtime = fi.ModTime().UTC().Truncate(100 * time.Nanosecond)
		switch n.Type {
		case "dir":
			n.Mode = 0o755
		case "symlink":
			n.Mode = 0o777
		default:
			n.Mode = 0o644
			if fi.Mode().Perm()&0o200 == 0 {
				n.Mode = 0o444
			}
		}
		if strings.ContainsRune(rel, ':') {
			t.Fatalf("NTFSNodes: %s: a name with ':' is a stream on NTFS", rel)
		}
		nodes[rel] = n
	}
	return nodes
}

// MkntfsCopy makes an NTFS filesystem of size bytes with mkntfs and copies files into its root
// with ntfscp -t (bytes and modification time), without mounting anything: files maps a name
// in the root to the path of its source. It skips, or fails under SENDENSE_TEST_STRICT, without
// mkntfs and ntfscp (Debian: ntfs-3g).
func MkntfsCopy(t testing.TB, size int64, files map[string]string) []byte {
	t.Helper()
	mkntfs, ntfscp := lookSbin("mkntfs"), lookSbin("ntfscp")
	if mkntfs == "" || ntfscp == "" {
		testenv.Skip(t, "mkntfs or ntfscp not found (Debian: apt install ntfs-3g)")
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkntfs, "-F", "-f", "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkntfs: %v\n%s", err, out)
	}
	for name, src := range files {
		if out, err := exec.Command(ntfscp, "-q", "-t", img, src, name).CombinedOutput(); err != nil {
			t.Fatalf("ntfscp %s: %v\n%s", name, err, out)
		}
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
