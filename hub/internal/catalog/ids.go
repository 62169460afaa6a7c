package catalog

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// NewID returns a row id that sorts by creation time and tells its kind at a glance:
// prefix + UTC time (YYYYMMDD-HHMMSS) + "-" + 8 random hex digits, e.g.
// "bk-20261130-150405-1a2b3c4d". Two ids made in the same second collide with probability 2⁻³².
func NewID(prefix string, now time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // never fails: crypto/rand aborts the program instead
	return prefix + now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}
