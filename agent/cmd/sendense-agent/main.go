// Command sendense-agent runs next to vCenter/ESXi: it discovers VMs and disks, takes snapshots,
// reads changed blocks and pushes inventory and data to the hub over mutual TLS.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sendense/sendense/shared/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sendense-agent:", err)
		os.Exit(1)
	}
}

func run(_ context.Context, args []string, stdout, _ io.Writer) error {
	if len(args) == 1 && args[0] == "version" {
		_, err := fmt.Fprintln(stdout, "sendense-agent", version.Get())
		return err
	}
	return fmt.Errorf("usage: sendense-agent version")
}
