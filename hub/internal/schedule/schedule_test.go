package schedule_test

import (
	"errors"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the zones below must not depend on the host's zoneinfo

	"github.com/sendense/sendense/hub/internal/schedule"
)

// in parses "2006-01-02 15:04:05" as a wall-clock time in zone tz; it fails the test if the zone
// skips that reading. Tests avoid readings a fall-back repeats, whose instant Go leaves open.
func in(t *testing.T, tz, s string) time.Time {
	t.Helper()
	loc, err := time.LoadLocation(tz)
	if err != nil {
		t.Fatalf("load zone %s: %v", tz, err)
	}
	tm, err := time.ParseInLocation("2006-01-02 15:04:05", s, loc)
	if err != nil {
		t.Fatalf("parse %s: %v", s, err)
	}
	if got := tm.Format("2006-01-02 15:04:05"); got != s {
		t.Fatalf("%s does not exist in %s (it reads %s)", s, tz, got)
	}
	return tm
}

func utc(t *testing.T, s string) time.Time { return in(t, "UTC", s) }

func mustParse(t *testing.T, expr, tz string) schedule.Schedule {
	t.Helper()
	s, err := schedule.Parse(expr, tz)
	if err != nil {
		t.Fatalf("Parse(%q, %q): %v", expr, tz, err)
	}
	return s
}

func TestNext(t *testing.T) {
	tests := []struct {
		name, expr, tz string
		after          string // wall clock in tz
		want           string // wall clock in tz
	}{
		{"daily cron, before the slot", "0 3 * * *", "UTC", "2026-11-24 02:59:59", "2026-11-24 03:00:00"},
		{"strictly after the slot itself", "0 3 * * *", "UTC", "2026-11-24 03:00:00", "2026-11-25 03:00:00"},
		{"a second into the slot", "0 3 * * *", "UTC", "2026-11-24 03:00:01", "2026-11-25 03:00:00"},
		{"in the policy's zone", "0 3 * * *", "Asia/Tokyo", "2026-11-24 12:00:00", "2026-11-25 03:00:00"},
		{"half-hour zone", "30 2 * * *", "Asia/Kolkata", "2026-11-24 02:30:00", "2026-11-25 02:30:00"},
		{"end of year", "0 0 * * *", "Europe/Berlin", "2026-12-31 23:59:00", "2027-01-01 00:00:00"},
		{"@hourly", "@hourly", "UTC", "2026-11-24 10:00:00", "2026-11-24 11:00:00"},
		{"@daily", "@daily", "Europe/Berlin", "2026-11-24 23:30:00", "2026-11-25 00:00:00"},
		{"@midnight", "@midnight", "UTC", "2026-11-24 00:00:00", "2026-11-25 00:00:00"},
		{"@weekly is Sunday", "@weekly", "UTC", "2026-11-24 10:00:00", "2026-11-29 00:00:00"},
		{"@monthly", "@monthly", "UTC", "2026-11-24 10:00:00", "2026-12-01 00:00:00"},
		{"@yearly", "@YEARLY", "UTC", "2026-11-24 10:00:00", "2027-01-01 00:00:00"},
		{"@annually", "@annually", "UTC", "2026-01-01 00:00:00", "2027-01-01 00:00:00"},
		{"weekdays skip the weekend", "0 22 * * 1-5", "UTC", "2026-11-27 23:00:00", "2026-11-30 22:00:00"},
		{"weekday names", "0 22 * * mon-FRI", "UTC", "2026-11-27 23:00:00", "2026-11-30 22:00:00"},
		{"7 is Sunday", "0 0 * * 7", "UTC", "2026-11-24 10:00:00", "2026-11-29 00:00:00"},
		{"month names, Sundays of January and July", "0 12 * JAN,jul sun", "UTC", "2026-11-24 10:00:00", "2027-01-03 12:00:00"},
		{"day of month and weekday both restricted: either", "0 0 13 * 5", "UTC", "2026-11-01 00:00:00", "2026-11-06 00:00:00"},
		{"day of month starting with *: both", "0 0 */10 * MON", "UTC", "2026-11-01 00:00:00", "2026-12-21 00:00:00"},
		{"29 February", "0 0 29 2 *", "UTC", "2026-03-01 00:00:00", "2028-02-29 00:00:00"},
		{"31st skips short months", "0 0 31 * *", "UTC", "2026-11-01 00:00:00", "2026-12-31 00:00:00"},
		{"lists, ranges and steps", "5,10-20/5 */6 * * *", "UTC", "2026-11-24 06:20:00", "2026-11-24 12:05:00"},
		{"a/n runs to the end of the field", "50/5 1 * * *", "UTC", "2026-11-24 01:51:00", "2026-11-24 01:55:00"},
		{"every minute", "* * * * *", "UTC", "2026-11-24 10:00:30", "2026-11-24 10:01:00"},
		{"every minute, on the minute", "* * * * *", "UTC", "2026-11-24 10:00:00", "2026-11-24 10:01:00"},
		{"extra spaces", "  0   3 *  * *\t", "UTC", "2026-11-24 02:00:00", "2026-11-24 03:00:00"},
		{"empty zone is UTC", "0 3 * * *", "", "2026-11-24 02:00:00", "2026-11-24 03:00:00"},
		{"@every 6h is anchored to UTC", "@every 6h", "Asia/Kolkata", "2026-11-24 12:00:00", "2026-11-24 17:30:00"},
		{"@every strictly after", "@every 6h", "UTC", "2026-11-24 12:00:00", "2026-11-24 18:00:00"},
		{"@every 90m", "@every 90m", "UTC", "2026-11-24 00:00:00", "2026-11-24 01:30:00"},
		{"@every 1h30m", "@every 1h30m", "UTC", "2026-11-24 01:29:59", "2026-11-24 01:30:00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tz := tt.tz
			if tz == "" {
				tz = "UTC"
			}
			s := mustParse(t, tt.expr, tt.tz)
			after, want := in(t, tz, tt.after), in(t, tz, tt.want)
			got := s.Next(after)
			if !got.Equal(want) {
				t.Errorf("Next(%s) = %s, want %s", after, got, want)
			}
		})
	}
}

func TestInterval(t *testing.T) {
	tests := []struct {
		name        string
		d           time.Duration
		after, want time.Time
	}{
		{"at the epoch", 7 * time.Minute, time.Unix(0, 0), time.Unix(420, 0)},
		{"just before the epoch", 7 * time.Minute, time.Unix(-1, 0), time.Unix(0, 0)},
		{"long before the epoch", time.Hour, time.Unix(-3600*5-1, 0), time.Unix(-3600*5, 0)},
		{"a nanosecond before a slot", time.Minute, time.Unix(60, 0).Add(-time.Nanosecond), time.Unix(60, 0)},
		{"on a slot", time.Minute, time.Unix(60, 0), time.Unix(120, 0)},
		{"a nanosecond after a slot", time.Minute, time.Unix(60, 1), time.Unix(120, 0)},
		{"a day", 24 * time.Hour, utc(t, "2026-11-24 23:59:59"), utc(t, "2026-11-25 00:00:00")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := schedule.Interval(tt.d)
			if err != nil {
				t.Fatalf("Interval(%s): %v", tt.d, err)
			}
			if got := s.Next(tt.after); !got.Equal(tt.want) {
				t.Errorf("Next(%s) = %s, want %s", tt.after, got, tt.want)
			}
		})
	}
}

func TestIntervalRejects(t *testing.T) {
	for _, d := range []time.Duration{0, -time.Hour, 59 * time.Second, time.Minute + time.Millisecond} {
		t.Run(d.String(), func(t *testing.T) {
			if _, err := schedule.Interval(d); !errors.Is(err, schedule.ErrInvalid) {
				t.Fatalf("Interval(%s) = %v, want ErrInvalid", d, err)
			}
		})
	}
}

// runs lists the run times of s in [from, to), each in its zone's wall clock.
func runs(s schedule.Schedule, from, to time.Time) []string {
	var out []string
	for t := s.Next(from.Add(-time.Nanosecond)); t.Before(to); t = s.Next(t) {
		out = append(out, t.Format("01-02 15:04 MST"))
	}
	return out
}

func TestDaylightSaving(t *testing.T) {
	tests := []struct {
		name, expr, tz string
		from, to       string // wall clock in tz
		want           []string
	}{
		{
			// Europe/Berlin skips 02:00-02:59 on 2026-03-29: the 02:30 run happens once, at 03:00.
			name: "spring forward, skipped time runs once at the jump", expr: "30 2 * * *", tz: "Europe/Berlin",
			from: "2026-03-27 00:00:00", to: "2026-04-01 00:00:00",
			want: []string{"03-27 02:30 CET", "03-28 02:30 CET", "03-29 03:00 CEST", "03-30 02:30 CEST", "03-31 02:30 CEST"},
		},
		{
			name: "spring forward, several skipped times are one run", expr: "0,30 2 * * *", tz: "Europe/Berlin",
			from: "2026-03-28 00:00:00", to: "2026-03-31 00:00:00",
			want: []string{"03-28 02:00 CET", "03-28 02:30 CET", "03-29 03:00 CEST", "03-30 02:00 CEST", "03-30 02:30 CEST"},
		},
		{
			name: "spring forward, skipped hour and the hour after are one run", expr: "0 2,3 * * *", tz: "Europe/Berlin",
			from: "2026-03-29 00:00:00", to: "2026-03-30 00:00:00",
			want: []string{"03-29 03:00 CEST"},
		},
		{
			name: "spring forward, hourly skips the missing hour", expr: "0 * * * *", tz: "Europe/Berlin",
			from: "2026-03-29 00:30:00", to: "2026-03-29 05:00:00",
			want: []string{"03-29 01:00 CET", "03-29 03:00 CEST", "03-29 04:00 CEST"},
		},
		{
			name: "spring forward, every-hour schedules follow elapsed time", expr: "30 * * * *", tz: "Europe/Berlin",
			from: "2026-03-29 00:00:00", to: "2026-03-29 05:00:00",
			want: []string{"03-29 00:30 CET", "03-29 01:30 CET", "03-29 03:30 CEST", "03-29 04:30 CEST"},
		},
		{
			// 02:30 happens twice on 2026-10-25 (CEST, then CET): the run happens once, at the first.
			name: "fall back, repeated time runs once", expr: "30 2 * * *", tz: "Europe/Berlin",
			from: "2026-10-24 00:00:00", to: "2026-10-27 00:00:00",
			want: []string{"10-24 02:30 CEST", "10-25 02:30 CEST", "10-26 02:30 CET"},
		},
		{
			name: "fall back, hourly follows elapsed time", expr: "0 * * * *", tz: "Europe/Berlin",
			from: "2026-10-25 01:00:00", to: "2026-10-25 04:00:00",
			want: []string{"10-25 01:00 CEST", "10-25 02:00 CEST", "10-25 02:00 CET", "10-25 03:00 CET"},
		},
		{
			name: "fall back, every 20 minutes keeps going", expr: "*/20 * * * *", tz: "Europe/Berlin",
			from: "2026-10-25 01:50:00", to: "2026-10-25 03:00:00",
			want: []string{"10-25 02:00 CEST", "10-25 02:20 CEST", "10-25 02:40 CEST", "10-25 02:00 CET", "10-25 02:20 CET", "10-25 02:40 CET"},
		},
		{
			name: "fall back, restricted hours run once", expr: "*/20 2 * * *", tz: "Europe/Berlin",
			from: "2026-10-25 01:50:00", to: "2026-10-25 04:00:00",
			want: []string{"10-25 02:00 CEST", "10-25 02:20 CEST", "10-25 02:40 CEST"},
		},
		{
			// America/Santiago skips midnight on 2026-09-06 (00:00 → 01:00).
			name: "midnight skipped", expr: "@daily", tz: "America/Santiago",
			from: "2026-09-05 00:00:00", to: "2026-09-08 00:00:00",
			want: []string{"09-05 00:00 -04", "09-06 01:00 -03", "09-07 00:00 -03"},
		},
		{
			// America/Santiago falls back from 2026-04-05 00:00 to 2026-04-04 23:00.
			name: "fall back across midnight", expr: "30 23 * * *", tz: "America/Santiago",
			from: "2026-04-03 00:00:00", to: "2026-04-06 12:00:00",
			want: []string{"04-03 23:30 -03", "04-04 23:30 -03", "04-05 23:30 -04"},
		},
		{
			// Australia/Lord_Howe moves by 30 minutes: 02:00 → 02:30 on 2026-10-04.
			name: "half-hour jump", expr: "15 2 * * *", tz: "Australia/Lord_Howe",
			from: "2026-10-03 00:00:00", to: "2026-10-06 00:00:00",
			want: []string{"10-03 02:15 +1030", "10-04 02:30 +11", "10-05 02:15 +11"},
		},
		{
			name: "half-hour jump, every hour", expr: "15 * * * *", tz: "Australia/Lord_Howe",
			from: "2026-10-04 01:00:00", to: "2026-10-04 04:00:00",
			want: []string{"10-04 01:15 +1030", "10-04 03:15 +11"},
		},
		{
			// Pacific/Apia skipped 2011-12-30 entirely.
			name: "a skipped day", expr: "0 12 * * *", tz: "Pacific/Apia",
			from: "2011-12-29 00:00:00", to: "2012-01-01 00:00:00",
			want: []string{"12-29 12:00 -10", "12-31 00:00 +14", "12-31 12:00 +14"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustParse(t, tt.expr, tt.tz)
			got := runs(s, in(t, tt.tz, tt.from), in(t, tt.tz, tt.to))
			if strings.Join(got, ", ") != strings.Join(tt.want, ", ") {
				t.Errorf("runs:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestRunsPerDay counts the runs of whole days in Europe/Berlin: 23 hours on the spring-forward
// day, 25 on the fall-back day, yet one daily run on each.
func TestRunsPerDay(t *testing.T) {
	tests := []struct {
		expr, day, next string
		want            int
	}{
		{"0 * * * *", "2026-03-29", "2026-03-30", 23},
		{"0 * * * *", "2026-10-25", "2026-10-26", 25},
		{"*/15 * * * *", "2026-03-29", "2026-03-30", 23 * 4},
		{"*/15 * * * *", "2026-10-25", "2026-10-26", 25 * 4},
		{"30 2 * * *", "2026-03-29", "2026-03-30", 1},
		{"30 2 * * *", "2026-10-25", "2026-10-26", 1},
		{"0,30 2 * * *", "2026-10-25", "2026-10-26", 2},
	}
	for _, tt := range tests {
		t.Run(tt.expr+" "+tt.day, func(t *testing.T) {
			s := mustParse(t, tt.expr, "Europe/Berlin")
			got := runs(s, in(t, "Europe/Berlin", tt.day+" 00:00:00"), in(t, "Europe/Berlin", tt.next+" 00:00:00"))
			if len(got) != tt.want {
				t.Errorf("%d runs, want %d: %q", len(got), tt.want, got)
			}
		})
	}
}

func TestDue(t *testing.T) {
	daily := mustParse(t, "0 3 * * *", "Europe/Berlin")
	every6h := mustParse(t, "@every 6h", "UTC")
	b := func(s string) time.Time { return in(t, "Europe/Berlin", s) }
	tests := []struct {
		name      string
		s         schedule.Schedule
		last, now time.Time
		due       bool
		next      time.Time
	}{
		{
			name: "hub down for 3 days: one run now, next in the future", s: daily,
			last: b("2026-11-20 03:00:07"), now: b("2026-11-23 10:00:00"),
			due: true, next: b("2026-11-24 03:00:00"),
		},
		{
			name: "never run: due at once", s: daily,
			last: time.Time{}, now: b("2026-11-23 10:00:00"),
			due: true, next: b("2026-11-24 03:00:00"),
		},
		{
			name: "creation time as last: waits for the first slot", s: daily,
			last: b("2026-11-23 10:00:00"), now: b("2026-11-23 10:00:30"),
			due: false, next: b("2026-11-24 03:00:00"),
		},
		{
			name: "ran today, not yet again", s: daily,
			last: b("2026-11-23 03:00:07"), now: b("2026-11-23 10:00:00"),
			due: false, next: b("2026-11-24 03:00:00"),
		},
		{
			name: "on the slot exactly", s: daily,
			last: b("2026-11-23 03:00:07"), now: b("2026-11-24 03:00:00"),
			due: true, next: b("2026-11-25 03:00:00"),
		},
		{
			name: "checked twice in the same minute", s: daily,
			last: b("2026-11-24 03:00:00"), now: b("2026-11-24 03:00:40"),
			due: false, next: b("2026-11-25 03:00:00"),
		},
		{
			name: "clock went back below last: no second run", s: daily,
			last: b("2026-11-24 03:00:07"), now: b("2026-11-24 02:59:30"),
			due: false, next: b("2026-11-25 03:00:00"),
		},
		{
			name: "clock went back below last by an hour at most: still no second run", s: daily,
			last: b("2026-11-24 03:00:07"), now: b("2026-11-24 02:00:08"),
			due: false, next: b("2026-11-25 03:00:00"),
		},
		{
			name: "last recorded by a clock a year ahead: due at once, not in a year", s: daily,
			last: b("2027-11-24 03:00:07"), now: b("2026-11-24 10:00:00"),
			due: true, next: b("2026-11-25 03:00:00"),
		},
		{
			name: "interval, down for 3 days", s: every6h,
			last: utc(t, "2026-11-20 06:00:03"), now: utc(t, "2026-11-23 07:00:00"),
			due: true, next: utc(t, "2026-11-23 12:00:00"),
		},
		{
			name: "interval, not yet", s: every6h,
			last: utc(t, "2026-11-23 06:00:03"), now: utc(t, "2026-11-23 11:59:59"),
			due: false, next: utc(t, "2026-11-23 12:00:00"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			due, next := schedule.Due(tt.s, tt.last, tt.now)
			if due != tt.due || !next.Equal(tt.next) {
				t.Errorf("Due(last %s, now %s) = %v, %s; want %v, %s", tt.last, tt.now, due, next, tt.due, tt.next)
			}
			if !next.After(tt.now) {
				t.Errorf("next %s is not after now %s", next, tt.now)
			}
		})
	}
}

// TestDueSchedulerLoop drives Due like a scheduler that polls every 7 minutes and is down from
// the 21st at noon to the 24th at noon: it runs once a day, once when it comes back, and never
// twice for one slot.
func TestDueSchedulerLoop(t *testing.T) {
	s := mustParse(t, "0 3 * * *", "Europe/Berlin")
	b := func(s string) time.Time { return in(t, "Europe/Berlin", s) }
	downFrom, downTo := b("2026-11-21 12:00:00"), b("2026-11-24 12:00:00")
	var last time.Time = b("2026-11-19 03:00:00")
	var got []string
	for now := b("2026-11-19 12:00:00"); now.Before(b("2026-11-26 12:00:00")); now = now.Add(7 * time.Minute) {
		if !now.Before(downFrom) && now.Before(downTo) {
			continue
		}
		due, next := schedule.Due(s, last, now)
		if !next.After(now) {
			t.Fatalf("at %s: next %s is not in the future", now, next)
		}
		if due {
			got = append(got, now.Format("01-02 15:04"))
			last = now
		}
	}
	// Polls fall at 12:00 + k·7 minutes: the first poll at or after each 03:00, and after 12:00
	// on the 24th, is 03:03, 03:05, 12:03, 03:06, 03:01.
	want := []string{"11-20 03:03", "11-21 03:05", "11-24 12:03", "11-25 03:06", "11-26 03:01"}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("runs:\n got %q\nwant %q", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		expr, tz string
		want     string // substring of the error
	}{
		{"0 25 * * *", "UTC", "field 2 (hour): 25 out of range 0-23"},
		{"60 * * * *", "UTC", "field 1 (minute): 60 out of range 0-59"},
		{"* * 0 * *", "UTC", "field 3 (day-of-month): 0 out of range 1-31"},
		{"* * 32 * *", "UTC", "field 3 (day-of-month): 32 out of range 1-31"},
		{"* * * 13 *", "UTC", "field 4 (month): 13 out of range 1-12"},
		{"* * * * 8", "UTC", "field 5 (day-of-week): 8 out of range 0-7"},
		{"* * * * MOO", "UTC", `field 5 (day-of-week): unknown name "MOO"`},
		{"* * * JANUARY *", "UTC", `field 4 (month): unknown name "JANUARY"`},
		{"0 mon * * *", "UTC", `field 2 (hour): "mon": not a number`},
		{"5-1 * * * *", "UTC", "field 1 (minute): range 5-1 runs backwards"},
		{"*/0 * * * *", "UTC", "field 1 (minute): step 0 out of range 1-59"},
		{"*/60 * * * *", "UTC", "field 1 (minute): step 60 out of range 1-59"},
		{"*/x * * * *", "UTC", `field 1 (minute): step "x": not a number`},
		{"1,,2 * * * *", "UTC", "field 1 (minute): empty list item"},
		{"-1 * * * *", "UTC", "field 1 (minute): missing value"},
		{"1- * * * *", "UTC", "field 1 (minute): missing value"},
		{"1.5 * * * *", "UTC", `field 1 (minute): "1.5": not a number`},
		{"+1 * * * *", "UTC", `field 1 (minute): "+1": not a number`},
		{"99999 * * * *", "UTC", "too large"},
		{"1-2-3 * * * *", "UTC", "field 1 (minute)"},
		{"0 0 30 2 *", "UTC", "field 3 (day-of-month): no listed day exists in any listed month"},
		{"0 0 31 4,6,9,11 *", "UTC", "never runs"},
		{"0 3 * *", "UTC", "4 fields"},
		{"0 0 3 * * *", "UTC", "6 fields"},
		{"", "UTC", "empty expression"},
		{"   ", "UTC", "empty expression"},
		{"@fortnightly", "UTC", `unknown descriptor "@fortnightly"`},
		{"@daily 3", "UTC", "@daily takes no arguments"},
		{"@every", "UTC", "@every takes one duration"},
		{"@every 6h 3", "UTC", "@every takes one duration"},
		{"@every 6d", "UTC", `@every 6d: time: unknown unit "d"`},
		{"@every 30s", "UTC", "interval 30s is shorter than the minimum 1m0s"},
		{"@every -1h", "UTC", "shorter than the minimum"},
		{"@every 90.5s", "UTC", "not a whole number of seconds"},
		{"0 3 * * *", "Mars/Olympus_Mons", `time zone "Mars/Olympus_Mons"`},
		{"0 3 * * *", "Local", `time zone "Local" depends on the hub's host`},
		{"0 3 * * *", "../../etc/passwd", `time zone "../../etc/passwd"`},
		{"@every 6h", "Nowhere/Town", `time zone "Nowhere/Town"`},
	}
	for _, tt := range tests {
		t.Run(tt.expr+" "+tt.tz, func(t *testing.T) {
			s, err := schedule.Parse(tt.expr, tt.tz)
			if err == nil {
				t.Fatalf("Parse(%q, %q) = %v, want an error", tt.expr, tt.tz, s)
			}
			if !errors.Is(err, schedule.ErrInvalid) {
				t.Errorf("Parse(%q, %q) = %v, want it to wrap ErrInvalid", tt.expr, tt.tz, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%q, %q) = %q, want it to contain %q", tt.expr, tt.tz, err, tt.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	tests := []struct{ expr, want string }{
		{" 0  3 * * * ", "0 3 * * *"},
		{"@Daily", "@daily"},
		{"@every 90m", "@every 1h30m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			s := mustParse(t, tt.expr, "UTC")
			str, ok := s.(interface{ String() string })
			if !ok {
				t.Fatalf("%T has no String method", s)
			}
			if got := str.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func BenchmarkNext(b *testing.B) {
	for _, bc := range []struct{ expr, tz string }{
		{"0 3 * * *", "Europe/Berlin"},
		{"*/15 * * * *", "Europe/Berlin"},
		{"0 0 29 2 *", "Europe/Berlin"},
		{"@every 6h", "UTC"},
	} {
		s, err := schedule.Parse(bc.expr, bc.tz)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bc.expr, func(b *testing.B) {
			t := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			for b.Loop() {
				t = s.Next(t)
				if t.Year() > 9000 {
					t = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
				}
			}
		})
	}
}

// A duty that starts (a hub restarted, the lease taken over) runs an interval after its last
// run, not an interval after its start: a hub restarted every few days still verifies weekly.
func TestFirstWaitCountsFromTheLastRun(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	week := 7 * 24 * time.Hour
	for _, tc := range []struct {
		last time.Time
		want time.Duration
	}{
		{time.Time{}, time.Minute},                     // never run: once the hub settled
		{now.Add(-8 * 24 * time.Hour), time.Minute},    // overdue
		{now.Add(-5 * 24 * time.Hour), 48 * time.Hour}, // the rest of the week
		{now, week},
		{now.Add(365 * 24 * time.Hour), week}, // recorded by a clock set ahead: no later than a week
	} {
		if got := schedule.FirstWait(tc.last, week, schedule.Settle, now); got != tc.want {
			t.Errorf("last run %v: first run in %v, want %v", tc.last, got, tc.want)
		}
	}
}
