package restoretest

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/shared/api"
)

// Report gathers the restore tests created in [from, to] by VM, newest first, and names the
// VMs (not gone, not templates) that had none.
func (s *Service) Report(ctx context.Context, from, to time.Time) (api.RestoreTestReport, error) {
	rep := api.RestoreTestReport{From: from.UTC(), To: to.UTC(), GeneratedAt: s.opts.Now().UTC(), VMs: []api.RestoreTestVM{}, Untested: []api.RestoreTestVMName{}}
	rows, _, err := s.cat.RestoreTests(ctx, catalog.RestoreTestFilter{Since: from})
	if err != nil {
		return rep, err
	}
	byVM := map[string]int{}
	for i := range rows {
		t := Info(&rows[i])
		if t.CreatedAt.After(to) {
			continue
		}
		k, ok := byVM[t.VMContextID]
		if !ok {
			k = len(rep.VMs)
			byVM[t.VMContextID] = k
			rep.VMs = append(rep.VMs, api.RestoreTestVM{VMName: t.VMName, VMContextID: t.VMContextID, LastResult: t.Status})
		}
		v := &rep.VMs[k]
		v.Runs = append(v.Runs, t)
		rep.Runs++
		switch t.Status {
		case api.RestoreTestPassed:
			v.Passed++
			rep.Passed++
		case api.RestoreTestFailed:
			v.Failed++
			rep.Failed++
		}
	}
	sort.Slice(rep.VMs, func(i, j int) bool { return rep.VMs[i].VMName < rep.VMs[j].VMName })
	vms, _, err := s.cat.VMs(ctx, catalog.VMFilter{})
	if err != nil {
		return rep, err
	}
	for _, vm := range vms {
		if _, tested := byVM[vm.ContextID]; tested || vm.CurrentStatus == api.VMGone || vm.IsTemplate {
			continue
		}
		rep.Untested = append(rep.Untested, api.RestoreTestVMName{VMName: vm.VMName, VMContextID: vm.ContextID})
	}
	sort.Slice(rep.Untested, func(i, j int) bool { return rep.Untested[i].VMName < rep.Untested[j].VMName })
	return rep, nil
}

// md escapes text for a Markdown table cell or line: no raw control characters, pipes or
// markup from names an agent reported.
func md(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case api.UnsafeRune(r):
			fmt.Fprintf(&b, "\\u%04x", r)
		case strings.ContainsRune("|\\`*_[]<>#", r):
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'f', 2, 64) }

func ts(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// WriteMarkdown writes the report as a Markdown document an auditor can keep.
func WriteMarkdown(w io.Writer, rep api.RestoreTestReport) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Restore test report\n\n")
	fmt.Fprintf(&b, "- Period: %s to %s\n", ts(rep.From), ts(rep.To))
	fmt.Fprintf(&b, "- Generated: %s\n", ts(rep.GeneratedAt))
	fmt.Fprintf(&b, "- Runs: %d (%d passed, %d failed, %d not finished)\n", rep.Runs, rep.Passed, rep.Failed, rep.Runs-rep.Passed-rep.Failed)
	fmt.Fprintf(&b, "- VMs tested: %d; VMs without a restore test in the period: %d\n\n", len(rep.VMs), len(rep.Untested))
	fmt.Fprintf(&b, "A read check reads a disk of the restore point in full through the hub's restore path; every chunk is verified against its SHA-256 digest. ")
	fmt.Fprintf(&b, "A paths check looks for one path in the filesystems of the restore point (disk-2000:/p1/etc/hosts: on that disk; /p1/etc/hosts: on any disk), reading a file in full and listing a directory through the same verified path. ")
	fmt.Fprintf(&b, "Bytes are the disk and file bytes read and verified (zero areas included, as a restore writes them); data bytes are those held in chunks; MB/s is 10^6 bytes per second; seconds is the time the whole test took (the measured time to restore the disks). ")
	fmt.Fprintf(&b, "A boot check boots the restore point with instant recovery on the ESXi host named, every NIC on the isolated port group named, and waits for VMware Tools to report the guest running or for its TCP port to answer; RTO is the time from the hub's request to that first boot signal; the session is stopped afterwards (the VM powered off and unregistered, the datastore unmounted, its writes dropped).\n\n")
	fmt.Fprintf(&b, "## Summary\n\n| VM | runs | passed | failed | last result |\n|---|---:|---:|---:|---|\n")
	for _, v := range rep.VMs {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %s |\n", md(v.VMName), len(v.Runs), v.Passed, v.Failed, strings.ToUpper(v.LastResult))
	}
	for _, v := range rep.VMs {
		fmt.Fprintf(&b, "\n## %s (%s)\n\n", md(v.VMName), md(v.VMContextID))
		fmt.Fprintf(&b, "| test | started | result | restore point | point taken | checks | bytes | data bytes | MB/s | seconds | RTO seconds |\n|---|---|---|---|---|---|---:|---:|---:|---:|---:|\n")
		for _, t := range v.Runs {
			var checks []string
			for _, c := range t.Checks {
				r := "pass"
				if !c.Passed {
					r = "FAIL"
				}
				what := checkName(c)
				if c.Name == api.CheckBoot && c.Host != "" {
					what += " on " + c.Host
				}
				checks = append(checks, md(what)+": "+r)
			}
			if len(checks) == 0 {
				checks = append(checks, md(strings.Join(t.RequestedChecks, ", "))+": not run")
			}
			rto := "-"
			if t.RTOSeconds > 0 {
				rto = formatFloat(t.RTOSeconds)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %d | %d | %s | %s | %s |\n", md(t.ID), ts(t.CreatedAt), strings.ToUpper(t.Status), md(t.BackupID),
				ts(t.BackupCreatedAt), strings.Join(checks, "; "), t.BytesRead, t.DataBytes, formatFloat(t.MBPerS), formatFloat(t.Seconds), rto)
		}
		var failures []string
		for _, t := range v.Runs {
			if t.Status == api.RestoreTestFailed {
				failures = append(failures, fmt.Sprintf("- %s (restore point %s): %s", md(t.ID), md(t.BackupID), md(t.Error)))
			}
		}
		if len(failures) > 0 {
			fmt.Fprintf(&b, "\nFailures:\n\n%s\n", strings.Join(failures, "\n"))
		}
	}
	fmt.Fprintf(&b, "\n## VMs without a restore test in the period\n\n")
	if len(rep.Untested) == 0 {
		fmt.Fprintf(&b, "None.\n")
	}
	for _, v := range rep.Untested {
		fmt.Fprintf(&b, "- %s (%s)\n", md(v.VMName), md(v.VMContextID))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
