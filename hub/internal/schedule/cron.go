package schedule

import (
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"time"
)

// cron is a parsed five-field expression. Each set holds bit v for value v.
type cron struct {
	expr   string
	loc    *time.Location
	minute uint64 // bits 0-59
	hour   uint64 // bits 0-23
	dom    uint64 // bits 1-31
	month  uint64 // bits 1-12
	dow    uint64 // bits 0-6, Sunday = 0
	// domStar and dowStar record a field starting with "*": the day then has to match both
	// fields; when both are restricted, either (Vixie cron).
	domStar, dowStar bool
}

const allHours = 1<<24 - 1

// searchYears bounds the search for the next run. The Gregorian calendar, weekdays included,
// repeats every 400 years, so a day pattern that matches at all matches within any 400 years.
const searchYears = 401

// zoneReach bounds how far, in either direction, an instant can be from the same wall-clock
// reading taken as UTC: zone offsets stay within ±15h (UTC+14 today, historic local mean times a
// little beyond), so 30h also covers the distance between two readings of one wall time.
const zoneReach = 30 * time.Hour

type fieldSpec struct {
	pos      int
	name     string
	min, max int      // the values a number may take
	top      int      // where "*" and "a/n" end: max, except 6 for day-of-week
	names    []string // names[i] spells value min+i
}

var fieldSpecs = [5]fieldSpec{
	{pos: 1, name: "minute", min: 0, max: 59, top: 59},
	{pos: 2, name: "hour", min: 0, max: 23, top: 23},
	{pos: 3, name: "day-of-month", min: 1, max: 31, top: 31},
	{pos: 4, name: "month", min: 1, max: 12, top: 12,
		names: []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}},
	{pos: 5, name: "day-of-week", min: 0, max: 7, top: 6, // 7 is Sunday again
		names: []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}},
}

func (f fieldSpec) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: field %d (%s): %s", ErrInvalid, f.pos, f.name, fmt.Sprintf(format, args...))
}

func parseCron(fields []string, loc *time.Location) (*cron, error) {
	if len(fields) != 5 {
		return nil, fmt.Errorf("%w: %d fields in %q, want 5: minute hour day-of-month month day-of-week", ErrInvalid, len(fields), strings.Join(fields, " "))
	}
	var sets [5]uint64
	for i, f := range fieldSpecs {
		set, err := f.parse(fields[i])
		if err != nil {
			return nil, err
		}
		sets[i] = set
	}
	c := &cron{
		expr:    strings.Join(fields, " "),
		loc:     loc,
		minute:  sets[0],
		hour:    sets[1],
		dom:     sets[2],
		month:   sets[3],
		dow:     sets[4],
		domStar: strings.HasPrefix(fields[2], "*"),
		dowStar: strings.HasPrefix(fields[4], "*"),
	}
	if c.dow&(1<<7) != 0 {
		c.dow = c.dow&^(1<<7) | 1
	}
	if err := c.checkDaysExist(); err != nil {
		return nil, err
	}
	return c, nil
}

// checkDaysExist refuses day-of-month and month combinations no calendar has ("0 0 30 2 *"),
// which would never run. Weekdays cannot make a pattern impossible: with OR they add days, with
// AND every month day falls on every weekday in some year.
func (c *cron) checkDaysExist() error {
	if !c.domStar && !c.dowStar {
		return nil
	}
	longest := [13]int{0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}
	firstDay := nextBit(c.dom, 1) // parse never yields an empty set
	for m := 1; m <= 12; m++ {
		if c.month&(1<<m) != 0 && firstDay <= longest[m] {
			return nil
		}
	}
	return fieldSpecs[2].errorf("no listed day exists in any listed month, so the schedule never runs")
}

// parse reads one field into a value set.
func (f fieldSpec) parse(s string) (uint64, error) {
	var set uint64
	for item := range strings.SplitSeq(s, ",") {
		if item == "" {
			return 0, f.errorf("empty list item in %q", s)
		}
		rng, stepText, hasStep := strings.Cut(item, "/")
		lo, hi := f.min, f.top
		if rng != "*" {
			first, last, isRange := strings.Cut(rng, "-")
			var err error
			if lo, err = f.value(first); err != nil {
				return 0, err
			}
			switch {
			case isRange:
				if hi, err = f.value(last); err != nil {
					return 0, err
				}
				if hi < lo {
					return 0, f.errorf("range %s runs backwards", rng)
				}
			case !hasStep:
				hi = lo
			}
		}
		step := 1
		if hasStep {
			n, err := number(stepText)
			if err != nil {
				return 0, f.errorf("step %q: %v", stepText, err)
			}
			if n < 1 || n > f.top-f.min {
				return 0, f.errorf("step %d out of range 1-%d", n, f.top-f.min)
			}
			step = n
		}
		for v := lo; v <= hi; v += step {
			set |= 1 << v
		}
	}
	return set, nil
}

// value reads one number or name of the field.
func (f fieldSpec) value(s string) (int, error) {
	if s == "" {
		return 0, f.errorf("missing value")
	}
	if f.names != nil && !isDigits(s) {
		for i, n := range f.names {
			if strings.EqualFold(s, n) {
				return f.min + i, nil
			}
		}
		return 0, f.errorf("unknown name %q (want %s-%s or %d-%d)", s,
			strings.ToUpper(f.names[0]), strings.ToUpper(f.names[len(f.names)-1]), f.min, f.max)
	}
	n, err := number(s)
	if err != nil {
		return 0, f.errorf("%q: %v", s, err)
	}
	if n < f.min || n > f.max {
		return 0, f.errorf("%d out of range %d-%d", n, f.min, f.max)
	}
	return n, nil
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// number reads a plain decimal number: no sign, no spaces, at most 4 digits (no field value
// needs more, and it keeps the conversion from overflowing).
func number(s string) (int, error) {
	if !isDigits(s) {
		return 0, fmt.Errorf("not a number")
	}
	if len(s) > 4 {
		return 0, fmt.Errorf("too large")
	}
	return strconv.Atoi(s)
}

// nextBit returns the smallest value ≥ from in set, or -1.
func nextBit(set uint64, from int) int {
	if from < 0 {
		from = 0
	}
	if from > 63 {
		return -1
	}
	rest := set >> from << from
	if rest == 0 {
		return -1
	}
	return bits.TrailingZeros64(rest)
}

// String returns the expression as given, with its spacing normalised.
func (c *cron) String() string { return c.expr }

// Next returns the first run time strictly after after, in the schedule's zone.
//
// It works on wall-clock readings written as UTC times ("naive" times): nextWall finds the next
// matching reading, occurrences maps a reading to the instants that show it. Readings and
// instants are ordered alike except across a fall-back, which the search bounds below cover.
func (c *cron) Next(after time.Time) time.Time {
	// A reading earlier than after's own can still lie in the future if the clock falls back
	// soon; start early enough to see it.
	local := after.In(c.loc)
	_, offAfter := local.Zone()
	lowest := offAfter
	for _, z := range zonesBetween(after, after.Add(zoneReach), c.loc) {
		lowest = min(lowest, z)
	}
	w := naive(local).Add(-time.Duration(offAfter-lowest) * time.Second).Truncate(time.Minute)

	limit := w.Year() + searchYears
	var best, stop time.Time
	for {
		reading, ok := c.nextWall(w, limit)
		if !ok || (!best.IsZero() && !reading.Before(stop)) {
			break
		}
		times, skipped := occurrences(reading, c.loc)
		if skipped && c.hour == allHours {
			times = nil // every-hour schedules follow elapsed time: a skipped reading is no run
		}
		for i, t := range times {
			if i > 0 && c.hour != allHours {
				break // a repeated reading runs once, unless the schedule runs every hour
			}
			if t.After(after) && (best.IsZero() || t.Before(best)) {
				best = t
				// A later reading can only show an instant before best if the clock stood
				// ahead in between: past best + the highest offset up to best, none can.
				highest := offAfter
				for _, z := range zonesBetween(after, best, c.loc) {
					highest = max(highest, z)
				}
				stop = best.UTC().Add(time.Duration(highest) * time.Second) // a reading
			}
		}
		w = reading.Add(time.Minute)
	}
	if best.IsZero() {
		return best
	}
	return best.In(c.loc)
}

// zonesBetween returns the offsets (seconds east of UTC) that take effect after from and no
// later than to.
func zonesBetween(from, to time.Time, loc *time.Location) []int {
	var offs []int
	for t := from; ; {
		_, end := t.In(loc).ZoneBounds()
		if end.IsZero() || end.After(to) || !end.After(t) {
			return offs
		}
		_, off := end.In(loc).Zone()
		offs = append(offs, off)
		t = end
	}
}

// naive returns the wall-clock reading of t as a UTC time.
func naive(t time.Time) time.Time {
	y, mo, d := t.Date()
	h, mi, s := t.Clock()
	return time.Date(y, mo, d, h, mi, s, t.Nanosecond(), time.UTC)
}

// nextWall returns the first reading at or after w (a whole minute) that matches the fields,
// or false if none comes before the year limit.
func (c *cron) nextWall(w time.Time, limit int) (time.Time, bool) {
	y, mo, d := w.Date()
	h, mi := w.Hour(), w.Minute()
	for y <= limit {
		m := nextBit(c.month, int(mo))
		if m < 0 {
			y, mo, d, h, mi = y+1, 1, 1, 0, 0
			continue
		}
		if m != int(mo) {
			mo, d, h, mi = time.Month(m), 1, 0, 0
		}
		if d > daysIn(y, mo) {
			y, mo, d, h, mi = y+int(mo)/12, mo%12+1, 1, 0, 0
			continue
		}
		if !c.dayMatches(y, mo, d) {
			d, h, mi = d+1, 0, 0
			continue
		}
		nh := nextBit(c.hour, h)
		if nh < 0 {
			d, h, mi = d+1, 0, 0
			continue
		}
		if nh != h {
			h, mi = nh, 0
		}
		nm := nextBit(c.minute, mi)
		if nm < 0 {
			h, mi = h+1, 0
			if h > 23 {
				d, h = d+1, 0
			}
			continue
		}
		return time.Date(y, mo, d, h, nm, 0, 0, time.UTC), true
	}
	return time.Time{}, false
}

func daysIn(y int, m time.Month) int {
	return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

func (c *cron) dayMatches(y int, m time.Month, d int) bool {
	domOK := c.dom&(1<<d) != 0
	dowOK := c.dow&(1<<time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Weekday()) != 0
	if c.domStar || c.dowStar {
		return domOK && dowOK
	}
	return domOK || dowOK
}

// occurrences returns the instants at which loc's clocks show the reading w, earliest first:
// one normally, two when the clocks fall back over w. When the clocks jump over w, it returns
// the instant of the jump, the first whose reading is later than w, and skipped.
func occurrences(w time.Time, loc *time.Location) (times []time.Time, skipped bool) {
	y, mo, d := w.Date()
	t := time.Date(y, mo, d, w.Hour(), w.Minute(), 0, 0, loc)
	if naive(t).Equal(w) {
		start, end := t.ZoneBounds()
		if (start.IsZero() || t.Sub(start) > zoneReach) && (end.IsZero() || end.Sub(t) > zoneReach) {
			return []time.Time{t}, false // no transition near: the common case
		}
	}
	// Near a transition: try the offset of every zone period within reach.
	var out []time.Time
	var jumps []time.Time
	from, to := w.Add(-zoneReach), w.Add(zoneReach)
	for s := from; ; {
		_, off := s.In(loc).Zone()
		cand := w.Add(-time.Duration(off) * time.Second)
		if _, got := cand.In(loc).Zone(); got == off && !containsTime(out, cand) {
			out = append(out, cand)
		}
		_, end := s.In(loc).ZoneBounds()
		if end.IsZero() || end.After(to) || !end.After(s) {
			break
		}
		jumps = append(jumps, end)
		s = end
	}
	if len(out) > 0 {
		slices.SortFunc(out, time.Time.Compare)
		for i := range out {
			out[i] = out[i].In(loc)
		}
		return out, false
	}
	for _, j := range jumps {
		if naive(j.Add(-time.Nanosecond).In(loc)).Before(w) && naive(j.In(loc)).After(w) {
			return []time.Time{j.In(loc)}, true
		}
	}
	return nil, true // unreachable with a consistent zone database
}

func containsTime(ts []time.Time, t time.Time) bool {
	for _, u := range ts {
		if u.Equal(t) {
			return true
		}
	}
	return false
}
