package schedule

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
	_ "time/tzdata" // the zones below must not depend on the host's zoneinfo
)

func values(set uint64) []int {
	var out []int
	for v := range 64 {
		if set&(1<<v) != 0 {
			out = append(out, v)
		}
	}
	return out
}

func TestFieldSets(t *testing.T) {
	tests := []struct {
		expr             string
		field            int // 0 minute … 4 day-of-week
		want             []int
		domStar, dowStar bool
	}{
		{expr: "0 * * * *", field: 0, want: []int{0}, domStar: true, dowStar: true},
		{expr: "1-10/3 * * * *", field: 0, want: []int{1, 4, 7, 10}, domStar: true, dowStar: true},
		{expr: "50/4 * * * *", field: 0, want: []int{50, 54, 58}, domStar: true, dowStar: true},
		{expr: "*/20 * * * *", field: 0, want: []int{0, 20, 40}, domStar: true, dowStar: true},
		{expr: "5,1,5,3 * * * *", field: 0, want: []int{1, 3, 5}, domStar: true, dowStar: true},
		{expr: "0 */7 * * *", field: 1, want: []int{0, 7, 14, 21}, domStar: true, dowStar: true},
		{expr: "0 22-23,0-2 * * *", field: 1, want: []int{0, 1, 2, 22, 23}, domStar: true, dowStar: true},
		{expr: "0 0 */10 * *", field: 2, want: []int{1, 11, 21, 31}, domStar: true, dowStar: true},
		{expr: "0 0 1,15 * *", field: 2, want: []int{1, 15}, domStar: false, dowStar: true},
		{expr: "0 0 * feb-Apr,DEC *", field: 3, want: []int{2, 3, 4, 12}, domStar: true, dowStar: true},
		{expr: "0 0 * */4 *", field: 3, want: []int{1, 5, 9}, domStar: true, dowStar: true},
		{expr: "0 0 * * *", field: 4, want: []int{0, 1, 2, 3, 4, 5, 6}, domStar: true, dowStar: true},
		{expr: "0 0 * * 7", field: 4, want: []int{0}, domStar: true, dowStar: false},
		{expr: "0 0 * * 5-7", field: 4, want: []int{0, 5, 6}, domStar: true, dowStar: false},
		{expr: "0 0 * * */2", field: 4, want: []int{0, 2, 4, 6}, domStar: true, dowStar: true},
		{expr: "0 0 * * 1/2", field: 4, want: []int{1, 3, 5}, domStar: true, dowStar: false},
		{expr: "0 0 * * sat,SUN", field: 4, want: []int{0, 6}, domStar: true, dowStar: false},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			s, err := Parse(tt.expr, "UTC")
			if err != nil {
				t.Fatal(err)
			}
			c := s.(*cron)
			sets := []uint64{c.minute, c.hour, c.dom, c.month, c.dow}
			if got := values(sets[tt.field]); !slices.Equal(got, tt.want) {
				t.Errorf("field %d = %v, want %v", tt.field+1, got, tt.want)
			}
			if c.domStar != tt.domStar || c.dowStar != tt.dowStar {
				t.Errorf("domStar, dowStar = %v, %v; want %v, %v", c.domStar, c.dowStar, tt.domStar, tt.dowStar)
			}
		})
	}
}

func (c *cron) matchesReading(r time.Time) bool {
	y, m, d := r.Date()
	return c.month&(1<<m) != 0 && c.dayMatches(y, m, d) && c.hour&(1<<r.Hour()) != 0 && c.minute&(1<<r.Minute()) != 0
}

// bruteRuns is the reference the DST rules are checked against, written from the instants'
// side: walk time minute by minute, and run at instant x when its reading matches and has not
// been shown before (or the schedule runs every hour), or, for a schedule with fixed hours, when
// the clocks jumped over a matching reading to reach x.
func bruteRuns(c *cron, from, to time.Time) []time.Time {
	var out []time.Time
	seen := make(map[time.Time]bool)
	prev := naive(from.Add(-time.Minute).In(c.loc))
	for x := from; x.Before(to); x = x.Add(time.Minute) {
		r := naive(x.In(c.loc))
		run := c.matchesReading(r) && (c.hour == allHours || !seen[r])
		for s := prev.Add(time.Minute); c.hour != allHours && s.Before(r); s = s.Add(time.Minute) {
			run = run || c.matchesReading(s)
		}
		seen[r], prev = true, r
		if run {
			out = append(out, x)
		}
	}
	return out
}

// TestNextMatchesBruteForce compares Next with bruteRuns around daylight-saving transitions of
// several kinds, for starting points every few minutes.
func TestNextMatchesBruteForce(t *testing.T) {
	windows := []struct{ tz, day string }{
		{"Europe/Berlin", "2026-03-29"},       // 02:00 → 03:00
		{"Europe/Berlin", "2026-10-25"},       // 03:00 → 02:00
		{"America/New_York", "2026-11-01"},    // 02:00 → 01:00
		{"America/Santiago", "2026-04-05"},    // 00:00 → 23:00 the day before
		{"America/Santiago", "2026-09-06"},    // 00:00 → 01:00
		{"Australia/Lord_Howe", "2026-04-05"}, // 02:00 → 01:30
		{"Australia/Lord_Howe", "2026-10-04"}, // 02:00 → 02:30
		{"Pacific/Apia", "2011-12-30"},        // the whole day skipped
		{"Asia/Kolkata", "2026-11-24"},        // no transition
	}
	exprs := []string{
		"30 2 * * *", "0 * * * *", "*/15 * * * *", "0 0 * * *", "15,45 1-3 * * *", "30 23 * * *",
		"* * * * *", "0,30 0-4 * * *", "45 1 * * *", "40 1 * * 0", "10 0,23 * * *", "30 * * * *",
		"15 0-23 * * *",
	}
	for _, w := range windows {
		loc, err := time.LoadLocation(w.tz)
		if err != nil {
			t.Fatal(err)
		}
		day, err := time.ParseInLocation("2006-01-02", w.day, loc)
		if err != nil {
			t.Fatal(err)
		}
		from, to := day.Add(-72*time.Hour), day.Add(72*time.Hour)
		for _, expr := range exprs {
			t.Run(fmt.Sprintf("%s %s %s", w.tz, w.day, expr), func(t *testing.T) {
				s, err := Parse(expr, w.tz)
				if err != nil {
					t.Fatal(err)
				}
				ref := bruteRuns(s.(*cron), from, to)
				fails := 0
				for after := day.Add(-48 * time.Hour); after.Before(day.Add(30*time.Hour)) && fails < 5; after = after.Add(17*time.Minute + 13*time.Second) {
					got := s.Next(after)
					i, _ := slices.BinarySearchFunc(ref, after, func(x, a time.Time) int {
						if x.After(a) {
							return 1
						}
						return -1
					})
					if i == len(ref) {
						if got.Before(to) {
							t.Errorf("Next(%s) = %s, reference has no run before %s", after, got, to)
							fails++
						}
						continue
					}
					if !got.Equal(ref[i]) {
						t.Errorf("Next(%s) = %s, reference %s", after, got, ref[i].In(loc))
						fails++
					}
				}
			})
		}
	}
}

// FuzzParse checks that Parse never panics, that its errors wrap ErrInvalid, and that what it
// accepts always has a next run time strictly later, which (for cron) shows a matching reading
// or is the instant a clock jump skipped one, and which String parses back to.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"0 3 * * *", "@daily", "@hourly", "@every 6h", "@every 1m", "@every 30s", "*/15 * * * *",
		"0 22 * * 1-5", "0 0 13 * 5", "0 0 */10 * MON", "0 0 29 2 *", "0 0 30 2 *", "5,10-20/5 */6 * * *",
		"50/5 1 * * *", "0 12 * JAN,jul sun", "0 25 * * *", "* * * * 8", "1,,2 * * * *", "5-1 * * * *",
		"@every 6d", "@yearly", "0 3 * *", "", "-", "*/", "*/0 * * * *", "0 0 31 4,6,9,11 *",
		"0 0 * * 7", "0-59/59 0-23/23 1-31/30 1-12/11 0-7/7", "@every 2562047h",
	} {
		for zone := range uint8(len(fuzzZones)) {
			f.Add(seed, zone)
		}
	}
	instants := []time.Time{
		{},
		time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(2026, 3, 29, 0, 59, 0, 0, time.UTC),
		time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC),
		time.Date(2026, 10, 25, 1, 30, 0, 0, time.UTC),
		time.Date(2026, 11, 24, 12, 34, 56, 789, time.UTC),
		time.Date(2099, 12, 31, 23, 59, 0, 0, time.UTC),
	}
	f.Fuzz(func(t *testing.T, expr string, zone uint8) {
		tz := fuzzZones[int(zone)%len(fuzzZones)]
		s, err := Parse(expr, tz)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q, %q) = %v, not wrapping ErrInvalid", expr, tz, err)
			}
			return
		}
		again, err := Parse(s.(fmt.Stringer).String(), tz)
		if err != nil {
			t.Fatalf("Parse(%q) accepted, its String %q not: %v", expr, s, err)
		}
		for _, after := range instants {
			next := s.Next(after)
			if !next.After(after) {
				t.Fatalf("Parse(%q, %q).Next(%s) = %s, not after", expr, tz, after, next)
			}
			if n2 := again.Next(after); !n2.Equal(next) {
				t.Fatalf("%q and its String %q disagree: %s, %s", expr, s, next, n2)
			}
			c, ok := s.(*cron)
			if !ok {
				continue
			}
			_, offBefore := next.Add(-time.Nanosecond).In(c.loc).Zone()
			_, offAt := next.In(c.loc).Zone()
			if !c.matchesReading(naive(next.In(c.loc))) && offBefore == offAt {
				t.Fatalf("Parse(%q, %q).Next(%s) = %s, which neither matches nor follows a jump", expr, tz, after, next)
			}
		}
	})
}

var fuzzZones = []string{"UTC", "Europe/Berlin", "America/Santiago", "Australia/Lord_Howe", "Asia/Kolkata"}
