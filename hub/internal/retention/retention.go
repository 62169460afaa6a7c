// Package retention decides which backups a policy keeps: keep-last and calendar-bucket rules
// (hourly, daily, weekly, monthly, yearly) with the semantics of restic forget and Proxmox Backup
// Server prune. It is pure logic: no database, no I/O, no clock.
package retention

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ErrInvalidRule is wrapped by every error Rule.Validate returns.
var ErrInvalidRule = errors.New("invalid retention rule")

// Reasons that are not tied to one rule bucket.
const (
	// ReasonProtected marks a backup kept because it is protected.
	ReasonProtected = "protected"
	// ReasonNoRule marks a backup kept because the rule is all zero (keep everything).
	ReasonNoRule = "no retention rule"
	// ReasonInvalidRule marks a backup kept because the rule did not validate: an invalid
	// rule never deletes anything.
	ReasonInvalidRule = "invalid retention rule"
)

// Rule says how many backups a policy keeps. Every field counts backups (KeepLast) or
// non-empty calendar buckets (the others); 0 turns that part of the rule off. A Rule whose
// fields are all zero keeps every backup. Negative values are invalid.
type Rule struct {
	KeepLast, KeepHourly, KeepDaily, KeepWeekly, KeepMonthly, KeepYearly int
}

// Validate reports a negative field, naming it (keep_daily: -1 is negative). The zero Rule is
// valid and means "keep everything".
func (r Rule) Validate() error {
	var errs []error
	for _, f := range r.fields() {
		if f.count < 0 {
			errs = append(errs, fmt.Errorf("%w: %s: %d is negative (0 turns the rule off)", ErrInvalidRule, f.name, f.count))
		}
	}
	return errors.Join(errs...)
}

// IsZero reports whether every field is zero, which keeps every backup.
func (r Rule) IsZero() bool { return r == Rule{} }

// String renders the rule in its configuration spelling, for logs: "keep_daily=7 keep_weekly=4",
// or "keep everything" for the zero Rule.
func (r Rule) String() string {
	var parts []string
	for _, f := range r.fields() {
		if f.count != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", f.name, f.count))
		}
	}
	if len(parts) == 0 {
		return "keep everything"
	}
	return strings.Join(parts, " ")
}

type field struct {
	name  string
	count int
}

func (r Rule) fields() []field {
	return []field{
		{"keep_last", r.KeepLast},
		{"keep_hourly", r.KeepHourly},
		{"keep_daily", r.KeepDaily},
		{"keep_weekly", r.KeepWeekly},
		{"keep_monthly", r.KeepMonthly},
		{"keep_yearly", r.KeepYearly},
	}
}

// Backup is one restore point as retention sees it. ID breaks ties between equal times.
type Backup struct {
	ID        string
	Time      time.Time
	Protected bool
}

// Decision is the verdict on one backup. Reasons lists every rule that keeps it, in rule order
// (last, hourly, daily, weekly, monthly, yearly), spelled:
//
//	"protected"
//	"last 2"                   2nd newest unprotected backup, within keep_last
//	"hourly 2026-11-24 13"     newest of that hour
//	"daily 2026-11-24"         newest of that day
//	"weekly 2026-W47"          newest of that ISO week (ISO week-numbering year)
//	"monthly 2026-11"          newest of that month
//	"yearly 2026"              newest of that year
//	"no retention rule"        the rule is all zero
//
// Reasons is empty exactly when Keep is false.
type Decision struct {
	Backup  Backup
	Keep    bool
	Reasons []string
}

type bucketRule struct {
	name  string
	count int
	key   func(c cal) int    // the bucket, cheap to compare
	label func(c cal) string // the bucket as reasons spell it
}

// cal is a backup's local calendar position; m == 0 means not computed yet.
type cal struct{ y, m, d, h, isoY, isoW int }

func calendar(t time.Time) cal {
	y, m, d := t.Date()
	isoY, isoW := t.ISOWeek()
	return cal{y: y, m: int(m), d: d, h: t.Hour(), isoY: isoY, isoW: isoW}
}

// Apply decides, for every backup, whether r keeps it. The result holds one Decision per input
// backup, newest first; backups with equal times are ordered by ID, greater ID first, so the
// output never depends on the input order.
//
// Calendar buckets are computed in loc (the policy's zone; nil means UTC): hourly is
// YYYY-MM-DD HH, daily YYYY-MM-DD, weekly the ISO year and week, monthly YYYY-MM, yearly YYYY.
// Walking from the newest backup to the oldest, each bucket rule keeps the newest backup of each
// of the N most recent buckets that hold a backup; keep_last keeps the N newest. The rules are
// independent (as in restic, unlike Proxmox Backup Server, where a later rule only looks at
// backups older than those earlier rules kept), so one backup can be kept by several rules and
// every reason is listed. There is no counterpart of restic's extra "oldest" keep (the oldest
// backup kept when a rule has slots left over): a rule keeps exactly the buckets it counts.
//
// Protected backups are always kept and are invisible to the rules: they take no keep_last
// position and no bucket slot, and they do not fill the bucket they fall in, so the rolling
// history the rule promises stays as long with or without pins. This is Proxmox Backup Server's
// treatment of protected snapshots; restic counts its --keep-tag snapshots in the buckets as
// well, which would let an operator's pin (before an upgrade, for a legal hold) silently evict
// the unpinned backups the schedule depends on.
//
// A rule that does not validate keeps everything (reason "invalid retention rule"): deleting on
// a misread rule cannot be undone, keeping can. Callers should still Validate rules where they
// are configured.
func Apply(r Rule, backups []Backup, loc *time.Location) []Decision {
	if loc == nil {
		loc = time.UTC
	}
	sorted := slices.Clone(backups)
	// A total order over everything a Backup holds, so an unstable sort is deterministic too.
	slices.SortFunc(sorted, func(a, b Backup) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		if c := strings.Compare(b.ID, a.ID); c != 0 {
			return c
		}
		switch {
		case a.Protected == b.Protected:
			return 0
		case a.Protected:
			return -1
		default:
			return 1
		}
	})

	out := make([]Decision, len(sorted))
	for i, b := range sorted {
		out[i].Backup = b
		if b.Protected {
			out[i].keep(ReasonProtected)
		}
	}

	switch {
	case r.Validate() != nil:
		for i := range out {
			out[i].keep(ReasonInvalidRule)
		}
		return out
	case r.IsZero():
		for i := range out {
			out[i].keep(ReasonNoRule)
		}
		return out
	}

	rules := []bucketRule{
		{"hourly", r.KeepHourly,
			func(c cal) int { return c.y*1000000 + c.m*10000 + c.d*100 + c.h },
			func(c cal) string { return fmt.Sprintf("%04d-%02d-%02d %02d", c.y, c.m, c.d, c.h) }},
		{"daily", r.KeepDaily,
			func(c cal) int { return c.y*10000 + c.m*100 + c.d },
			func(c cal) string { return fmt.Sprintf("%04d-%02d-%02d", c.y, c.m, c.d) }},
		{"weekly", r.KeepWeekly,
			func(c cal) int { return c.isoY*100 + c.isoW },
			func(c cal) string { return fmt.Sprintf("%04d-W%02d", c.isoY, c.isoW) }},
		{"monthly", r.KeepMonthly,
			func(c cal) int { return c.y*100 + c.m },
			func(c cal) string { return fmt.Sprintf("%04d-%02d", c.y, c.m) }},
		{"yearly", r.KeepYearly,
			func(c cal) int { return c.y },
			func(c cal) string { return fmt.Sprintf("%04d", c.y) }},
	}
	// A set rather than "differs from the previous backup's key": should a zone's clock ever
	// fall back across a bucket boundary (say from 00:30 to 23:30), a bucket could reappear after
	// a newer one, and it must still count once. Zones in use today fall back onto the boundary,
	// where both spellings agree.
	seen := make([]map[int]bool, len(rules))
	for i := range seen {
		seen[i] = make(map[int]bool)
	}

	last := 0
	for i := range out {
		if out[i].Backup.Protected {
			continue
		}
		if last < r.KeepLast {
			last++
			out[i].keep(fmt.Sprintf("last %d", last))
		}
		var c cal
		for j, br := range rules {
			if len(seen[j]) >= br.count {
				continue
			}
			if c.m == 0 {
				c = calendar(out[i].Backup.Time.In(loc))
			}
			k := br.key(c)
			if seen[j][k] {
				continue
			}
			seen[j][k] = true
			out[i].keep(br.name + " " + br.label(c))
		}
	}
	return out
}

func (d *Decision) keep(reason string) {
	d.Keep = true
	d.Reasons = append(d.Reasons, reason)
}
