package api

import (
	"fmt"
	"strings"
	"time"
)

// File entry types of a FileEntry.
const (
	FileTypeFile    = "file"
	FileTypeDir     = "dir"
	FileTypeSymlink = "symlink"
	FileTypeOther   = "other"
)

// FileEntry is one entry of a directory of a restore point's disk. At the top level ("/")
// each volume found on the disk is an entry: p1, p2, … for partitions (MBR or GPT numbering),
// "disk" for a filesystem on the whole disk; type "dir" when its filesystem can be read,
// "other" when not.
type FileEntry struct {
	Name string `json:"name"`
	Type string `json:"type"` // file, dir, symlink, other
	Size int64  `json:"size"` // bytes; a volume's size at the top level
	// Mtime is the last modification time as the filesystem records it.
	Mtime time.Time `json:"mtime"`
	// Mode holds the permission bits with setuid, setgid and sticky (07777), as a number.
	Mode   uint32 `json:"mode"`
	Target string `json:"target"` // a symlink's target, as stored; empty for anything else
}

// FileList answers GET PathBackupFiles: the entries of the directory Path (normalised), by name.
type FileList struct {
	Path    string      `json:"path"`
	Entries []FileEntry `json:"entries"`
}

// Attachment is the Content-Disposition of a download named name (a guest's file name: any
// bytes): its RFC 8187 filename*, every byte but the letters, digits and !#$&+-.^_`|~
// percent-encoded.
func Attachment(name string) string {
	var b strings.Builder
	b.WriteString("attachment; filename*=UTF-8''")
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$&+-.^_`|~", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}
