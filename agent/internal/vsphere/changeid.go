package vsphere

import "strings"

// ParseChangeID splits a CBT change ID such as "52 de 0c 8b ... 2b/17" into the part before the
// last "/" (the tracking UUID) and the sequence after it. ok is false for "*", "" and anything
// without a non-empty UUID and sequence. When the UUID part of a disk's change ID differs from
// the one of the last backup, tracking was reset and an incremental backup is impossible.
func ParseChangeID(s string) (uuid string, seq string, ok bool) {
	i := strings.LastIndexByte(s, '/')
	if i <= 0 || i == len(s)-1 {
		return "", "", false
	}
	uuid, seq = strings.TrimSpace(s[:i]), strings.TrimSpace(s[i+1:])
	if uuid == "" || seq == "" {
		return "", "", false
	}
	return uuid, seq, true
}
