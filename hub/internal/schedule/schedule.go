// Package schedule computes when a policy runs: five-field cron expressions evaluated in an IANA
// time zone across daylight-saving transitions, or fixed intervals, and what a scheduler does
// when it comes back after missing runs. It is pure logic: no clock, no I/O besides reading the
// zone database.
package schedule

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrInvalid is wrapped by every error Parse and Interval return; the message says what is
// wrong and where ("invalid schedule: field 2 (hour): 25 out of range 0-23").
var ErrInvalid = errors.New("invalid schedule")

// MinInterval is the shortest interval Interval and "@every" accept. A backup of a VM takes
// minutes; a shorter interval only queues runs behind each other.
const MinInterval = time.Minute

// Schedule says when a policy runs.
type Schedule interface {
	// Next returns the first run time strictly after after. It returns the zero Time only when
	// no run time exists, which Parse and Interval rule out for every schedule they return.
	// Implementations are immutable and safe for concurrent use.
	Next(after time.Time) time.Time
}

// Parse reads a schedule in the policy's zone tz (an IANA name such as "Europe/Berlin"; empty
// means UTC).
//
// expr is one of:
//   - five cron fields, "minute hour day-of-month month day-of-week", e.g. "0 3 * * *". Each
//     field is "*" or a comma list of values, ranges "a-b" and steps "*/n", "a-b/n", "a/n" (a to
//     the field's end). Months and weekdays also take English names (JAN, mon); 0 and 7 are both
//     Sunday. As in Vixie cron, when both day-of-month and day-of-week are restricted (neither
//     starts with "*") a day matches either; otherwise it must match both.
//   - "@yearly" (or "@annually"), "@monthly", "@weekly", "@daily" (or "@midnight"), "@hourly":
//     shorthands for "0 0 1 1 *", "0 0 1 * *", "0 0 * * 0", "0 0 * * *", "0 * * * *".
//   - "@every <duration>", e.g. "@every 6h": a fixed interval (see Interval); tz is still
//     checked but does not affect it.
//
// Cron fields are wall-clock times in tz, and daylight-saving changes are handled much as Vixie
// cron handles them:
//   - a schedule with fixed hours follows the wall clock. A time the clocks skip (02:30 on a
//     spring-forward day in Europe/Berlin) runs once, at the instant the clocks jump (03:00
//     local); several skipped times of one jump (02:00 and 02:30), and a run at the jump's end
//     (03:00), are that one run. A time the clocks pass twice (02:30 on a fall-back day) runs
//     once, at its first occurrence.
//   - a schedule whose hour field is every hour ("0 * * * *", "*/15 * * * *") follows elapsed
//     time: skipped times do not run, and repeated times run at both occurrences, so an hourly
//     schedule runs every hour of real time through both changes.
//
// tz "Local" is refused: it would make one policy mean different times on differently
// configured hubs. The zone database comes from the host or from a time/tzdata import in the
// binary.
func Parse(expr, tz string) (Schedule, error) {
	loc, err := loadZone(tz)
	if err != nil {
		return nil, err
	}
	fields := strings.Fields(expr)
	if len(fields) == 0 {
		return nil, fmt.Errorf("%w: empty expression", ErrInvalid)
	}
	if strings.HasPrefix(fields[0], "@") {
		name := strings.ToLower(fields[0])
		if name == "@every" {
			if len(fields) != 2 {
				return nil, fmt.Errorf("%w: @every takes one duration, like \"@every 6h\"", ErrInvalid)
			}
			d, err := time.ParseDuration(fields[1])
			if err != nil {
				return nil, fmt.Errorf("%w: @every %s: %w", ErrInvalid, fields[1], err)
			}
			return Interval(d)
		}
		spec, ok := descriptors[name]
		if !ok {
			return nil, fmt.Errorf("%w: unknown descriptor %q (want @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly or @every <duration>)", ErrInvalid, fields[0])
		}
		if len(fields) != 1 {
			return nil, fmt.Errorf("%w: %s takes no arguments", ErrInvalid, name)
		}
		c, err := parseCron(strings.Fields(spec), loc)
		if err != nil {
			return nil, err
		}
		c.expr = name
		return c, nil
	}
	return parseCron(fields, loc)
}

var descriptors = map[string]string{
	"@yearly":   "0 0 1 1 *",
	"@annually": "0 0 1 1 *",
	"@monthly":  "0 0 1 * *",
	"@weekly":   "0 0 * * 0",
	"@daily":    "0 0 * * *",
	"@midnight": "0 0 * * *",
	"@hourly":   "0 * * * *",
}

// loadZone resolves a policy's zone. "Local" is refused: it would make a policy mean different
// times on hubs configured differently.
func loadZone(tz string) (*time.Location, error) {
	switch tz {
	case "", "UTC":
		return time.UTC, nil
	case "Local":
		return nil, fmt.Errorf("%w: time zone \"Local\" depends on the hub's host; name an IANA zone such as \"Europe/Berlin\"", ErrInvalid)
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, fmt.Errorf("%w: time zone %q: %w", ErrInvalid, tz, err)
	}
	return loc, nil
}

// Interval returns a schedule that runs every d, at the instants that are whole multiples of d
// since 1970-01-01 00:00 UTC: "@every 6h" runs at 00:00, 06:00, 12:00 and 18:00 UTC whatever
// the time zone. Anchoring to fixed instants, rather than to the previous run, keeps runs from
// drifting by the scheduler's polling delay. d must be at least MinInterval and a whole number
// of seconds.
func Interval(d time.Duration) (Schedule, error) {
	if d < MinInterval {
		return nil, fmt.Errorf("%w: interval %s is shorter than the minimum %s", ErrInvalid, d, MinInterval)
	}
	if d%time.Second != 0 {
		return nil, fmt.Errorf("%w: interval %s is not a whole number of seconds", ErrInvalid, d)
	}
	return interval{d: d}, nil
}

type interval struct{ d time.Duration }

// Next returns the first multiple of the interval since the Unix epoch after after, in UTC.
func (iv interval) Next(after time.Time) time.Time {
	step := int64(iv.d / time.Second)
	sec := after.Unix() // rounds toward the past, so a fraction of a second still moves on
	n := sec / step
	if sec%step < 0 {
		n-- // floor division before 1970
	}
	return time.Unix((n+1)*step, 0).UTC()
}

// String returns the schedule as "@every <duration>".
func (iv interval) String() string { return "@every " + iv.d.String() }

// StepBack is how far a clock may step back below a policy's last run and still be taken for a
// correction of a right clock (NTP, a resumed VM) rather than of a wrong one.
const StepBack = time.Hour

// Due decides what a scheduler does at now for a policy whose last scheduled run was at last
// (the zero Time: never). due is true when at least one run time passed after last and by now:
// runs missed while the hub was down collapse into this one run, not one per missed run time.
// next is the following run time, always strictly after now: the first run time after now
// when due, else the pending run time.
//
// After starting a run because Due said so, record now as last. A policy that never ran is due
// at once: a new policy protects its VMs without waiting for the first slot. A caller that
// prefers to wait passes the policy's creation time as last instead. If the clock went back
// below last by up to StepBack, the policy waits for the first run time after last rather than
// running twice; a last further ahead was recorded by a clock that was wrong (a year ahead, say),
// and waiting for it would stop the policy for as long: the policy is due at once.
func Due(s Schedule, last, now time.Time) (due bool, next time.Time) {
	if last.IsZero() || last.Sub(now) > StepBack {
		return true, s.Next(now)
	}
	slot := s.Next(last)
	if slot.IsZero() {
		return false, slot
	}
	if !slot.After(now) {
		return true, s.Next(now)
	}
	return false, slot
}

// Settle is how long a starting hub waits at least before a background duty's first run.
const Settle = time.Minute

// FirstWait is how long a duty that runs every interval (verification, garbage collection)
// waits for its first run when it starts: until an interval after its last run (the zero Time:
// never), and at least settle (Settle), for the hub to settle after its start. A duty counted
// from its start instead would never run on a hub restarted more often than its interval. A
// last run dated after now (recorded by a clock set ahead) counts as now: the wait is never
// longer than an interval.
func FirstWait(last time.Time, interval, settle time.Duration, now time.Time) time.Duration {
	if last.After(now) {
		last = now
	}
	return max(settle, last.Add(interval).Sub(now))
}
