package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/events"
	"github.com/sendense/sendense/shared/api"
)

// eventOps reads events, newest first (limit 0: all).
type eventOps interface {
	Events(ctx context.Context, vm, typ string, since time.Time, limit int) (api.EventList, error)
}

func newEventsCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "events", Short: "Show recorded events: inventory changes and operators' requests"}
	var f events.Filter
	var since string
	var asJSON bool
	list := &cobra.Command{
		Use:   "list [--vm NAME|CONTEXT-ID] [--type TYPE] [--since 2026-01-02T15:04:05Z|24h] [--json]",
		Short: "List events, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return err
				}
				f.Since = t
			}
			return opsCmd(e, func(cmd *cobra.Command, _ []string, o eventOps) error {
				l, err := o.Events(cmd.Context(), f.VM, f.Type, f.Since, f.Limit)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(e.stdout, l)
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TIME\tTYPE\tVM\tACTOR\tFROM\tOUTCOME\tDETAILS")
				for _, ev := range l.Events {
					var details []string
					for _, k := range slices.Sorted(maps.Keys(ev.Details)) {
						details = append(details, k+"="+ev.Details[k])
					}
					row(tw, ev.At.UTC().Format(time.RFC3339), ev.Type, dash(ev.VM), dash(ev.Actor),
						dash(ev.SourceAddress), dash(ev.Outcome), strings.Join(details, " "))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				_, err = fmt.Fprintf(e.stdout, "%d of %d events\n", len(l.Events), l.Page.Total)
				return err
			})(cmd, args)
		},
	}
	list.Flags().StringVar(&f.VM, "vm", "", "VM name or context id")
	list.Flags().StringVar(&f.Type, "type", "", "event type: vm_added, vm_gone, ..., audit, chunk_quarantined, backup_healed, copy_run")
	list.Flags().StringVar(&since, "since", "", "events at or after this RFC 3339 time, or within this duration (24h)")
	list.Flags().IntVar(&f.Limit, "limit", 100, "at most this many (0 = all)")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON (the body of GET /api/v1/events)")
	cmd.AddCommand(list)
	return cmd
}

// parseSince reads an RFC 3339 time, or a duration counted back from now (Go units, or days: 30d).
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n > 0 && n <= 100*366 {
			return now.AddDate(0, 0, -n), nil
		}
	}
	return time.Time{}, fmt.Errorf("--since %q: want an RFC 3339 time such as 2026-01-02T15:04:05Z or a duration such as 24h or 30d", s)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
