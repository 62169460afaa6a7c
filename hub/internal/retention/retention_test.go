package retention_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the zones below must not depend on the host's zoneinfo

	"github.com/google/go-cmp/cmp"

	"github.com/sendense/sendense/hub/internal/retention"
)

func utc(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04:05", s)
	if err != nil {
		panic(err)
	}
	return t
}

func zone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("load zone %s: %v", name, err)
	}
	return loc
}

// at makes backups named by their UTC time ("2026-11-24 13:00:00" → ID "2026-11-24T13:00").
func at(times ...string) []retention.Backup {
	out := make([]retention.Backup, 0, len(times))
	for _, s := range times {
		tm := utc(s)
		out = append(out, retention.Backup{ID: tm.Format("2006-01-02T15:04"), Time: tm})
	}
	return out
}

// every makes a backup every step from first (inclusive) to last (inclusive).
func every(first, last string, step time.Duration) []retention.Backup {
	var times []string
	for tm := utc(first); !tm.After(utc(last)); tm = tm.Add(step) {
		times = append(times, tm.Format("2006-01-02 15:04:05"))
	}
	return at(times...)
}

func protect(bs []retention.Backup, ids ...string) []retention.Backup {
	for i := range bs {
		if slices.Contains(ids, bs[i].ID) {
			bs[i].Protected = true
		}
	}
	return bs
}

// kept returns ID → reasons of the kept backups, and checks the invariants every result has:
// one decision per input, newest first (ties by greater ID), reasons exactly when kept.
func kept(t *testing.T, in []retention.Backup, out []retention.Decision) map[string][]string {
	t.Helper()
	if len(out) != len(in) {
		t.Fatalf("got %d decisions for %d backups", len(out), len(in))
	}
	got := make(map[string][]string)
	for i, d := range out {
		if i > 0 {
			prev := out[i-1].Backup
			if c := prev.Time.Compare(d.Backup.Time); c < 0 || (c == 0 && prev.ID < d.Backup.ID) {
				t.Errorf("decision %d (%s) is out of order after %s", i, d.Backup.ID, prev.ID)
			}
		}
		if d.Keep != (len(d.Reasons) > 0) {
			t.Errorf("%s: keep=%v with reasons %q", d.Backup.ID, d.Keep, d.Reasons)
		}
		if d.Backup.Protected && !slices.Contains(d.Reasons, retention.ReasonProtected) {
			t.Errorf("%s: protected backup without reason %q: %q", d.Backup.ID, retention.ReasonProtected, d.Reasons)
		}
		if d.Keep {
			if _, dup := got[d.Backup.ID]; dup {
				t.Fatalf("backup %s decided twice", d.Backup.ID)
			}
			got[d.Backup.ID] = d.Reasons
		}
	}
	return got
}

func TestApply(t *testing.T) {
	tests := []struct {
		name    string
		rule    retention.Rule
		backups []retention.Backup
		loc     string
		want    map[string][]string
	}{
		{
			// 120 backups, 2026-10-30 00:00 to Saturday 2026-11-28 18:00 (ISO week 48).
			name:    "every 6 hours for 30 days, daily 3 weekly 2",
			rule:    retention.Rule{KeepDaily: 3, KeepWeekly: 2},
			backups: every("2026-10-30 00:00:00", "2026-11-28 18:00:00", 6*time.Hour),
			want: map[string][]string{
				"2026-11-28T18:00": {"daily 2026-11-28", "weekly 2026-W48"},
				"2026-11-27T18:00": {"daily 2026-11-27"},
				"2026-11-26T18:00": {"daily 2026-11-26"},
				"2026-11-22T18:00": {"weekly 2026-W47"}, // Sunday, the last of week 47
			},
		},
		{
			name:    "keep_last alone",
			rule:    retention.Rule{KeepLast: 3},
			backups: every("2026-11-20 00:00:00", "2026-11-24 00:00:00", 24*time.Hour),
			want: map[string][]string{
				"2026-11-24T00:00": {"last 1"},
				"2026-11-23T00:00": {"last 2"},
				"2026-11-22T00:00": {"last 3"},
			},
		},
		{
			name:    "keep_last larger than the history keeps all",
			rule:    retention.Rule{KeepLast: 10},
			backups: at("2026-11-24 00:00:00", "2026-11-23 00:00:00"),
			want: map[string][]string{
				"2026-11-24T00:00": {"last 1"},
				"2026-11-23T00:00": {"last 2"},
			},
		},
		{
			name: "hourly and daily",
			rule: retention.Rule{KeepHourly: 3, KeepDaily: 3},
			backups: at(
				"2026-11-24 11:20:00", "2026-11-24 11:00:00", "2026-11-24 10:40:00", "2026-11-24 10:20:00",
				"2026-11-24 10:00:00", "2026-11-23 22:00:00", "2026-11-23 09:00:00", "2026-11-22 23:59:59",
				"2026-11-21 12:00:00",
			),
			want: map[string][]string{
				"2026-11-24T11:20": {"hourly 2026-11-24 11", "daily 2026-11-24"},
				"2026-11-24T10:40": {"hourly 2026-11-24 10"},
				"2026-11-23T22:00": {"hourly 2026-11-23 22", "daily 2026-11-23"},
				"2026-11-22T23:59": {"daily 2026-11-22"},
			},
		},
		{
			name: "empty buckets do not count",
			rule: retention.Rule{KeepDaily: 3},
			backups: at("2026-11-24 08:00:00", "2026-11-24 07:00:00", "2026-11-20 08:00:00",
				"2026-11-10 08:00:00", "2026-11-01 08:00:00"),
			want: map[string][]string{
				"2026-11-24T08:00": {"daily 2026-11-24"},
				"2026-11-20T08:00": {"daily 2026-11-20"},
				"2026-11-10T08:00": {"daily 2026-11-10"},
			},
		},
		{
			// The 1st and the 15th of every month at 03:00, January 2023 to November 2026.
			name:    "monthly and yearly",
			rule:    retention.Rule{KeepMonthly: 3, KeepYearly: 3},
			backups: twiceMonthly(2023, 1, 2026, 11),
			want: map[string][]string{
				"2026-11-15T03:00": {"monthly 2026-11", "yearly 2026"},
				"2026-10-15T03:00": {"monthly 2026-10"},
				"2026-09-15T03:00": {"monthly 2026-09"},
				"2025-12-15T03:00": {"yearly 2025"},
				"2024-12-15T03:00": {"yearly 2024"},
			},
		},
		{
			// 2027-01-01 is a Friday in ISO week 2026-W53, not in 2027.
			name:    "weekly uses the ISO week-numbering year",
			rule:    retention.Rule{KeepWeekly: 2},
			backups: at("2027-01-04 12:00:00", "2027-01-01 12:00:00", "2026-12-28 12:00:00", "2026-12-27 12:00:00"),
			want: map[string][]string{
				"2027-01-04T12:00": {"weekly 2027-W01"},
				"2027-01-01T12:00": {"weekly 2026-W53"},
			},
		},
		{
			name:    "protected backups are kept and take no keep_last position",
			rule:    retention.Rule{KeepLast: 2},
			backups: protect(every("2026-11-20 00:00:00", "2026-11-24 00:00:00", 24*time.Hour), "2026-11-23T00:00", "2026-11-20T00:00"),
			want: map[string][]string{
				"2026-11-24T00:00": {"last 1"},
				"2026-11-23T00:00": {"protected"},
				"2026-11-22T00:00": {"last 2"},
				"2026-11-20T00:00": {"protected"},
			},
		},
		{
			name: "a protected backup neither fills its day nor takes a daily slot",
			rule: retention.Rule{KeepDaily: 2},
			backups: protect(at("2026-11-24 20:00:00", "2026-11-24 10:00:00", "2026-11-23 20:00:00", "2026-11-23 10:00:00",
				"2026-11-22 20:00:00"), "2026-11-24T20:00", "2026-11-23T20:00"),
			want: map[string][]string{
				"2026-11-24T20:00": {"protected"},
				"2026-11-24T10:00": {"daily 2026-11-24"},
				"2026-11-23T20:00": {"protected"},
				"2026-11-23T10:00": {"daily 2026-11-23"},
			},
		},
		{
			name: "backups on the same second are ordered by ID",
			rule: retention.Rule{KeepLast: 2, KeepDaily: 1},
			backups: []retention.Backup{
				{ID: "a", Time: utc("2026-11-24 12:00:00")},
				{ID: "c", Time: utc("2026-11-24 12:00:00")},
				{ID: "b", Time: utc("2026-11-24 12:00:00")},
				{ID: "z", Time: utc("2026-11-24 11:59:59")},
			},
			want: map[string][]string{
				"c": {"last 1", "daily 2026-11-24"},
				"b": {"last 2"},
			},
		},
		{
			name: "daily buckets in UTC",
			rule: retention.Rule{KeepDaily: 2},
			// 14:00 and 23:30 UTC on the 24th, 12:00 on the 23rd.
			backups: at("2026-11-24 23:30:00", "2026-11-24 14:00:00", "2026-11-23 12:00:00"),
			loc:     "UTC",
			want: map[string][]string{
				"2026-11-24T23:30": {"daily 2026-11-24"},
				"2026-11-23T12:00": {"daily 2026-11-23"},
			},
		},
		{
			name: "23:30 UTC is tomorrow in Asia/Tokyo",
			rule: retention.Rule{KeepDaily: 2},
			// The same backups: 08:30 and 23:00 JST on different days.
			backups: at("2026-11-24 23:30:00", "2026-11-24 14:00:00", "2026-11-23 12:00:00"),
			loc:     "Asia/Tokyo",
			want: map[string][]string{
				"2026-11-24T23:30": {"daily 2026-11-25"},
				"2026-11-24T14:00": {"daily 2026-11-24"},
			},
		},
		{
			name:    "Sunday evening UTC is the next ISO week in Asia/Tokyo",
			rule:    retention.Rule{KeepWeekly: 2},
			backups: at("2026-11-29 20:00:00", "2026-11-29 10:00:00"),
			loc:     "Asia/Tokyo",
			want: map[string][]string{
				"2026-11-29T20:00": {"weekly 2026-W49"}, // Monday 05:00 JST
				"2026-11-29T10:00": {"weekly 2026-W48"}, // Sunday 19:00 JST
			},
		},
		{
			name:    "Sunday evening in UTC is one week",
			rule:    retention.Rule{KeepWeekly: 2},
			backups: at("2026-11-29 20:00:00", "2026-11-29 10:00:00"),
			want: map[string][]string{
				"2026-11-29T20:00": {"weekly 2026-W48"},
			},
		},
		{
			name:    "New Year's Eve UTC is next year in Asia/Tokyo",
			rule:    retention.Rule{KeepWeekly: 1, KeepMonthly: 1, KeepYearly: 1},
			backups: at("2026-12-31 20:00:00", "2026-12-31 10:00:00"),
			loc:     "Asia/Tokyo",
			want: map[string][]string{
				// 2027-01-01 05:00 JST: still ISO week 2026-W53, but January 2027.
				"2026-12-31T20:00": {"weekly 2026-W53", "monthly 2027-01", "yearly 2027"},
			},
		},
		{
			// 01:30 EDT and 01:30 EST on 2026-11-01 are one local hour: only the later stays.
			name:    "hourly buckets are local hours across the fall-back",
			rule:    retention.Rule{KeepHourly: 3},
			backups: at("2026-11-01 07:00:00", "2026-11-01 06:30:00", "2026-11-01 05:30:00", "2026-11-01 04:30:00"),
			loc:     "America/New_York",
			want: map[string][]string{
				"2026-11-01T07:00": {"hourly 2026-11-01 02"},
				"2026-11-01T06:30": {"hourly 2026-11-01 01"},
				"2026-11-01T04:30": {"hourly 2026-11-01 00"},
			},
		},
		{
			name:    "all-zero rule keeps everything",
			rule:    retention.Rule{},
			backups: protect(at("2026-11-24 00:00:00", "2020-01-01 00:00:00"), "2020-01-01T00:00"),
			want: map[string][]string{
				"2026-11-24T00:00": {"no retention rule"},
				"2020-01-01T00:00": {"protected", "no retention rule"},
			},
		},
		{
			name:    "an invalid rule deletes nothing",
			rule:    retention.Rule{KeepLast: 1, KeepDaily: -1},
			backups: at("2026-11-24 00:00:00", "2026-11-23 00:00:00"),
			want: map[string][]string{
				"2026-11-24T00:00": {"invalid retention rule"},
				"2026-11-23T00:00": {"invalid retention rule"},
			},
		},
		{
			name:    "no backups",
			rule:    retention.Rule{KeepLast: 3},
			backups: nil,
			want:    map[string][]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var loc *time.Location // nil: UTC
			if tt.loc != "" {
				loc = zone(t, tt.loc)
			}
			// The input order must not matter.
			in := slices.Clone(tt.backups)
			rand.New(rand.NewPCG(1, 2)).Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
			before := slices.Clone(in)

			got := kept(t, in, retention.Apply(tt.rule, in, loc))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("kept backups (-want +got):\n%s", diff)
			}
			if !slices.Equal(in, before) {
				t.Error("Apply reordered or changed its input")
			}
		})
	}
}

func twiceMonthly(fromYear int, fromMonth time.Month, toYear int, toMonth time.Month) []retention.Backup {
	var times []string
	for m := time.Date(fromYear, fromMonth, 1, 3, 0, 0, 0, time.UTC); !m.After(time.Date(toYear, toMonth, 1, 3, 0, 0, 0, time.UTC)); m = m.AddDate(0, 1, 0) {
		times = append(times, m.Format("2006-01-02 15:04:05"), m.AddDate(0, 0, 14).Format("2006-01-02 15:04:05"))
	}
	return at(times...)
}

// TestApplyMatchesBruteForce checks Apply against an independent, slower reading of the
// semantics on random histories: for each rule, take the buckets of all unprotected backups,
// the N newest buckets, and the newest backup of each.
func TestApplyMatchesBruteForce(t *testing.T) {
	tokyo := zone(t, "Asia/Tokyo")
	berlin := zone(t, "Europe/Berlin")
	rng := rand.New(rand.NewPCG(7, 11))
	for i := range 300 {
		loc := []*time.Location{time.UTC, tokyo, berlin}[i%3]
		rule := retention.Rule{
			KeepLast: rng.IntN(4), KeepHourly: rng.IntN(5), KeepDaily: rng.IntN(5),
			KeepWeekly: rng.IntN(4), KeepMonthly: rng.IntN(4), KeepYearly: rng.IntN(3),
		}
		if rule.IsZero() {
			rule.KeepDaily = 1
		}
		var in []retention.Backup
		base := utc("2025-10-20 00:00:00")
		for j := range rng.IntN(60) {
			in = append(in, retention.Backup{
				ID: fmt.Sprintf("b%02d", j),
				// Two years of seconds, with many collisions on purpose at coarse granularity.
				Time:      base.Add(time.Duration(rng.IntN(2*365*24)) * time.Hour / time.Duration(1+rng.IntN(3))),
				Protected: rng.IntN(8) == 0,
			})
		}
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			got := kept(t, in, retention.Apply(rule, in, loc))
			want := bruteForce(rule, in, loc)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%v in %s: kept backups (-brute force +Apply):\n%s", rule, loc, diff)
			}
		})
	}
}

func bruteForce(r retention.Rule, in []retention.Backup, loc *time.Location) map[string][]string {
	newer := func(a, b retention.Backup) bool { // a strictly newer than b
		return a.Time.After(b.Time) || (a.Time.Equal(b.Time) && a.ID > b.ID)
	}
	var plain []retention.Backup
	want := make(map[string][]string)
	for _, b := range in {
		if b.Protected {
			want[b.ID] = []string{"protected"}
		} else {
			plain = append(plain, b)
		}
	}
	// keep_last: the backups with fewer than N newer unprotected backups.
	for _, b := range plain {
		n := 0
		for _, o := range plain {
			if newer(o, b) {
				n++
			}
		}
		if n < r.KeepLast {
			want[b.ID] = append(want[b.ID], fmt.Sprintf("last %d", n+1))
		}
	}
	keys := []struct {
		name  string
		count int
		key   func(time.Time) string
	}{
		{"hourly", r.KeepHourly, func(t time.Time) string {
			return fmt.Sprintf("%04d-%02d-%02d %02d", t.Year(), t.Month(), t.Day(), t.Hour())
		}},
		{"daily", r.KeepDaily, func(t time.Time) string { return fmt.Sprintf("%04d-%02d-%02d", t.Year(), t.Month(), t.Day()) }},
		{"weekly", r.KeepWeekly, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%04d-W%02d", y, w) }},
		{"monthly", r.KeepMonthly, func(t time.Time) string { return fmt.Sprintf("%04d-%02d", t.Year(), t.Month()) }},
		{"yearly", r.KeepYearly, func(t time.Time) string { return fmt.Sprintf("%04d", t.Year()) }},
	}
	for _, k := range keys {
		newest := make(map[string]retention.Backup) // bucket → its newest backup
		for _, b := range plain {
			key := k.key(b.Time.In(loc))
			if cur, ok := newest[key]; !ok || newer(b, cur) {
				newest[key] = b
			}
		}
		var reps []retention.Backup
		for _, b := range newest {
			reps = append(reps, b)
		}
		slices.SortFunc(reps, func(a, b retention.Backup) int {
			if newer(a, b) {
				return -1
			}
			return 1
		})
		for _, b := range reps[:min(k.count, len(reps))] {
			want[b.ID] = append(want[b.ID], k.name+" "+k.key(b.Time.In(loc)))
		}
	}
	return want
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		rule    retention.Rule
		wantErr []string // substrings; nil: valid
	}{
		{name: "zero keeps everything", rule: retention.Rule{}},
		{name: "typical", rule: retention.Rule{KeepLast: 3, KeepDaily: 7, KeepWeekly: 4, KeepMonthly: 12, KeepYearly: 5}},
		{name: "negative last", rule: retention.Rule{KeepLast: -1}, wantErr: []string{"keep_last: -1 is negative"}},
		{name: "negative hourly", rule: retention.Rule{KeepHourly: -2}, wantErr: []string{"keep_hourly: -2"}},
		{name: "negative daily", rule: retention.Rule{KeepDaily: -1, KeepWeekly: 2}, wantErr: []string{"keep_daily"}},
		{name: "negative weekly", rule: retention.Rule{KeepWeekly: -1}, wantErr: []string{"keep_weekly"}},
		{name: "negative monthly", rule: retention.Rule{KeepMonthly: -1}, wantErr: []string{"keep_monthly"}},
		{name: "negative yearly", rule: retention.Rule{KeepYearly: -5}, wantErr: []string{"keep_yearly: -5"}},
		{name: "every bad field is named", rule: retention.Rule{KeepLast: -1, KeepYearly: -1}, wantErr: []string{"keep_last", "keep_yearly"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.rule.Validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, retention.ErrInvalidRule) {
				t.Fatalf("Validate() = %v, want an error wrapping ErrInvalidRule", err)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Validate() = %q, want it to mention %q", err, s)
				}
			}
		})
	}
}

func TestIsZeroAndString(t *testing.T) {
	tests := []struct {
		rule     retention.Rule
		zero     bool
		str      string
		keepsAll bool
	}{
		{retention.Rule{}, true, "keep everything", true},
		{retention.Rule{KeepLast: 1}, false, "keep_last=1", false},
		{retention.Rule{KeepDaily: 7, KeepYearly: 2}, false, "keep_daily=7 keep_yearly=2", false},
	}
	for _, tt := range tests {
		t.Run(tt.str, func(t *testing.T) {
			if got := tt.rule.IsZero(); got != tt.zero {
				t.Errorf("IsZero() = %v, want %v", got, tt.zero)
			}
			if got := tt.rule.String(); got != tt.str {
				t.Errorf("String() = %q, want %q", got, tt.str)
			}
			// Two backups on one day: only a rule that keeps everything keeps both.
			in := at("2026-11-24 10:00:00", "2026-11-24 09:00:00")
			all := true
			for _, d := range retention.Apply(tt.rule, in, time.UTC) {
				all = all && d.Keep
			}
			if all != tt.keepsAll {
				t.Errorf("Apply kept both = %v, want %v", all, tt.keepsAll)
			}
		})
	}
}

func BenchmarkApply(b *testing.B) {
	rule := retention.Rule{KeepLast: 3, KeepHourly: 24, KeepDaily: 14, KeepWeekly: 8, KeepMonthly: 12, KeepYearly: 10}
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		in   []retention.Backup
	}{
		{"a year of daily backups", every("2025-11-24 03:00:00", "2026-11-24 03:00:00", 24*time.Hour)},
		{"ten years of hourly backups", every("2016-11-24 00:00:00", "2026-11-24 00:00:00", time.Hour)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				retention.Apply(rule, bc.in, loc)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(bc.in)), "ns/backup")
		})
	}
}
