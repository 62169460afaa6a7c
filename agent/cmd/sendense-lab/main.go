// Command sendense-lab runs a simulated vCenter with CBT and real disk bytes for tests, the demo
// and benchmarks, and changes its disks while it runs.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/agent/internal/machinelimit"
	"github.com/sendense/sendense/agent/internal/netdelay"
	"github.com/sendense/sendense/shared/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sendense-lab:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := &cobra.Command{
		Use:           "sendense-lab",
		Short:         "A simulated vCenter with Changed Block Tracking and real disk bytes",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newServeCmd(stderr),
		newWriteCmd(stdout),
		newResizeCmd(),
		newResetCBTCmd(),
		newCompareCmd(stdout),
		newAgentConfigCmd(stdout),
		newMachineLimitCmd(stdout),
		newLatencyProxyCmd(stdout),
		&cobra.Command{
			Use:   "version",
			Short: "Print the version",
			Args:  cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error {
				_, err := fmt.Fprintln(stdout, "sendense-lab", version.Get())
				return err
			},
		},
	)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root.ExecuteContext(ctx)
}

func newServeCmd(stderr io.Writer) *cobra.Command {
	var (
		dir, specFile, listen, logLevel, window string
		demo, keep                              bool
		vms                                     vmFlags
		bulk                                    int
		bulkDisks                               int
		bulkSize, bulkFill                      string
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a lab until SIGINT/SIGTERM; DIR/lab.json describes it once ready",
		Long: `Run a lab until SIGINT/SIGTERM. Once ready, DIR/lab.json (0600) holds the SDK URL,
credentials, certificate thumbprint and CA file, the control API's URL and token, and the VMs
with their disks; DIR/password holds the password alone.

The inventory comes from exactly one of:
  --spec FILE                          a YAML lab spec
  --demo                               VM pgtest1: disks 2000 (102 GB, 2 GiB of data) and 2001 (5 GB)
  --vm NAME --disk SIZE[:FILL[:DATA[:SEED]]] ...   VMs with CBT on; each --disk adds to the --vm before it
  --vms N [--disks-per-vm M --disk-size S --fill F] N VMs bench-0001... for discovery benchmarks`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(stderr, logLevel)
			if err != nil {
				return err
			}
			// The simulator logs through the standard logger, e.g. every file name it probes
			// while taking a snapshot: those lines go to our log at debug level.
			log.SetFlags(0)
			log.SetOutput(debugWriter{logger})
			var sources []string
			if specFile != "" {
				sources = append(sources, "--spec")
			}
			if demo {
				sources = append(sources, "--demo")
			}
			if len(vms.specs) > 0 {
				sources = append(sources, "--vm")
			}
			if bulk > 0 {
				sources = append(sources, "--vms")
			}
			if len(sources) != 1 {
				return fmt.Errorf("give exactly one of --spec, --demo, --vm, --vms (got %v)", sources)
			}
			var spec lab.Spec
			switch {
			case specFile != "":
				data, err := os.ReadFile(specFile)
				if err != nil {
					return fmt.Errorf("read spec: %w", err)
				}
				if spec, err = lab.ParseSpec(data); err != nil {
					return fmt.Errorf("%s: %w", specFile, err)
				}
			case demo:
				spec = lab.DemoSpec()
			case bulk > 0:
				spec = lab.BulkSpec(bulk, bulkDisks, bulkSize, bulkFill)
			default:
				spec = lab.Spec{VMs: vms.specs}
			}
			opts := lab.ServeOptions{Options: lab.Options{Dir: dir, Listen: listen, Log: logger}, Keep: keep}
			if window != "" {
				if opts.QueryWindow, err = lab.ParseSize(window); err != nil {
					return fmt.Errorf("--query-window: %w", err)
				}
			}
			return lab.Serve(cmd.Context(), spec, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "lab directory: datastore, lab.json, password, ca.pem (required)")
	f.StringVar(&specFile, "spec", "", "YAML lab spec")
	f.BoolVar(&demo, "demo", false, "the demo lab (VM pgtest1)")
	f.Var(&vmSpecFlag{&vms}, "vm", "add a VM with CBT on (repeatable)")
	f.Var(&diskSpecFlag{&vms}, "disk", "add a disk SIZE[:FILL[:DATA[:SEED]]] to the last --vm, e.g. 102GB:sparse:2GiB")
	f.IntVar(&bulk, "vms", 0, "create N VMs named bench-0001...")
	f.IntVar(&bulkDisks, "disks-per-vm", 1, "disks per --vms VM")
	f.StringVar(&bulkSize, "disk-size", "1GiB", "disk size of --vms VMs")
	f.StringVar(&bulkFill, "fill", lab.FillZeros, "fill of --vms disks: zeros, random, compressible, sparse")
	f.StringVar(&listen, "listen", "127.0.0.1:0", "SDK listen address")
	f.StringVar(&window, "query-window", "", "disk bytes one QueryChangedDiskAreas answer covers (default 4GiB)")
	f.BoolVar(&keep, "keep", false, "keep the datastore and credentials in --dir on exit")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}

// vmFlags collects --vm and --disk flags in command-line order.
type vmFlags struct{ specs []lab.VMSpec }

type vmSpecFlag struct{ v *vmFlags }

func (f *vmSpecFlag) String() string { return "" }
func (f *vmSpecFlag) Type() string   { return "name" }
func (f *vmSpecFlag) Set(name string) error {
	f.v.specs = append(f.v.specs, lab.VMSpec{Name: name, CBT: true})
	return nil
}

type diskSpecFlag struct{ v *vmFlags }

func (f *diskSpecFlag) String() string { return "" }
func (f *diskSpecFlag) Type() string   { return "spec" }

// Set parses SIZE[:FILL[:DATA[:SEED]]].
func (f *diskSpecFlag) Set(s string) error {
	if len(f.v.specs) == 0 {
		return errors.New("--disk must follow a --vm")
	}
	parts := strings.Split(s, ":")
	if len(parts) > 4 || parts[0] == "" {
		return fmt.Errorf("disk %q: want SIZE[:FILL[:DATA[:SEED]]]", s)
	}
	d := lab.DiskSpec{Size: parts[0]}
	if len(parts) > 1 {
		d.Fill = parts[1]
	}
	if len(parts) > 2 {
		d.Data = parts[2]
	}
	if len(parts) > 3 {
		seed, err := strconv.ParseInt(parts[3], 10, 64)
		if err != nil {
			return fmt.Errorf("disk %q: seed: %w", s, err)
		}
		d.Seed = seed
	}
	vm := &f.v.specs[len(f.v.specs)-1]
	vm.Disks = append(vm.Disks, d)
	return nil
}

func newWriteCmd(stdout io.Writer) *cobra.Command {
	var (
		dir, vm, disk, offset, length string
		percent                       float64
		seed                          int64
		asJSON, hide                  bool
	)
	cmd := &cobra.Command{
		Use:   "write",
		Short: "Change disk bytes of a serving lab; CBT reports them in the next incremental",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := lab.WriteRequest{VM: vm, Disk: disk, Percent: percent, Seed: seed, HideFromCBT: hide}
			if !cmd.Flags().Changed("seed") {
				req.Seed = randomSeed()
			}
			switch {
			case percent != 0 && (offset != "" || length != ""):
				return errors.New("give --percent or --offset and --length, not both")
			case hide && percent == 0:
				return errors.New("--hide-from-cbt needs --percent")
			case percent == 0 && (offset == "" || length == ""):
				return errors.New("give --percent, or --offset and --length")
			case percent == 0:
				var err error
				if req.Offset, err = lab.ParseSize(offset); err != nil {
					return fmt.Errorf("--offset: %w", err)
				}
				if req.Length, err = lab.ParseSize(length); err != nil {
					return fmt.Errorf("--length: %w", err)
				}
			}
			c, err := lab.DialControl(dir)
			if err != nil {
				return err
			}
			extents, err := c.Write(cmd.Context(), req)
			if err != nil {
				return err
			}
			var total int64
			for _, e := range extents {
				total += e.Length
			}
			if asJSON {
				return json.NewEncoder(stdout).Encode(struct {
					VM      string       `json:"vm"`
					Disk    string       `json:"disk"`
					Seed    int64        `json:"seed"`
					Bytes   int64        `json:"bytes"`
					Extents []lab.Extent `json:"extents"`
				}{vm, disk, req.Seed, total, extents})
			}
			for _, e := range extents {
				if _, err := fmt.Fprintf(stdout, "%d %d\n", e.Offset, e.Length); err != nil {
					return err
				}
			}
			_, err = fmt.Fprintf(stdout, "# %d extents, %d bytes written to %s of %s (seed %d)\n", len(extents), total, disk, vm, req.Seed)
			return err
		},
	}
	f := cmd.Flags()
	diskFlags(cmd, &dir, &vm, &disk)
	f.Float64Var(&percent, "percent", 0, "overwrite about this % of the disk in 1 MiB writes spread over it")
	f.StringVar(&offset, "offset", "", "write at this offset (bytes or a size like 8MiB)")
	f.StringVar(&length, "length", "", "write this many random bytes")
	f.Int64Var(&seed, "seed", 0, "content and placement seed (default: random)")
	f.BoolVar(&asJSON, "json", false, "print the extents as JSON")
	f.BoolVar(&hide, "hide-from-cbt", false, "keep the writes out of CBT, as a CBT bug would (to test drift detection)")
	return cmd
}

func newResizeCmd() *cobra.Command {
	var dir, vm, disk, size string
	cmd := &cobra.Command{
		Use:   "resize",
		Short: "Grow a disk of a serving lab",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := lab.ParseSize(size)
			if err != nil {
				return fmt.Errorf("--size: %w", err)
			}
			c, err := lab.DialControl(dir)
			if err != nil {
				return err
			}
			return c.Resize(cmd.Context(), vm, disk, n)
		},
	}
	diskFlags(cmd, &dir, &vm, &disk)
	cmd.Flags().StringVar(&size, "size", "", "new capacity, e.g. 110GB (rounded up to a MiB)")
	_ = cmd.MarkFlagRequired("size")
	return cmd
}

func newResetCBTCmd() *cobra.Command {
	var dir, vm, disk string
	cmd := &cobra.Command{
		Use:   "reset-cbt",
		Short: "Give a disk a new change-tracking UUID: earlier change IDs become invalid",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := lab.DialControl(dir)
			if err != nil {
				return err
			}
			return c.ResetCBT(cmd.Context(), vm, disk)
		},
	}
	diskFlags(cmd, &dir, &vm, &disk)
	return cmd
}

func newCompareCmd(stdout io.Writer) *cobra.Command {
	var dir, vm, disk string
	cmd := &cobra.Command{
		Use:   "compare --dir DIR --vm NAME --disk ID IMAGE",
		Short: "Check that IMAGE (e.g. a restored disk) holds exactly the bytes of a lab disk; exit 1 if not",
		Long: "Compares the lab disk's raw bytes with IMAGE over IMAGE's size, reading only the areas either\n" +
			"file has allocated (holes read as zeros), so sparse 100 GB disks compare in seconds.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := lab.ReadState(dir)
			if err != nil {
				return err
			}
			flat := ""
			for _, v := range st.VMs {
				for _, d := range v.Disks {
					if v.Name == vm && d.DiskID == disk {
						flat = d.FlatPath
					}
				}
			}
			if flat == "" {
				return fmt.Errorf("the lab in %s has no disk %s of VM %s", dir, disk, vm)
			}
			fi, err := os.Stat(args[0])
			if err != nil {
				return err
			}
			if err := lab.CompareFiles(flat, args[0], fi.Size()); err != nil {
				return fmt.Errorf("%s of %s and %s: %w", disk, vm, args[0], err)
			}
			_, err = fmt.Fprintf(stdout, "identical: %s of %s and %s (%d bytes)\n", disk, vm, args[0], fi.Size())
			return err
		},
	}
	diskFlags(cmd, &dir, &vm, &disk)
	return cmd
}

func newAgentConfigCmd(stdout io.Writer) *cobra.Command {
	var dir, name, transport, stateDir string
	cmd := &cobra.Command{
		Use:   "agent-config --dir DIR [--name lab] [--state-dir DIR] [--transport https|nbd|file]",
		Short: "Print a sendense-agent configuration whose source is this lab",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := lab.ReadState(dir)
			if err != nil {
				return err
			}
			var b strings.Builder
			if stateDir != "" {
				fmt.Fprintf(&b, "state_dir: %s\n", stateDir)
			}
			fmt.Fprintf(&b, "sources:\n  - name: %s\n    url: %s\n    username: %s\n    password_file: %s\n    ca_file: %s\n",
				name, st.SDKURL, st.Username, st.PasswordFile, st.CAFile)
			switch transport {
			case "https":
			case "nbd":
				b.WriteString("    transport: nbd\n    nbd:\n      plugin: curl\n")
			case "file":
				if len(st.VMs) == 0 || len(st.VMs[0].Disks) == 0 {
					return errors.New("the file transport needs a lab with at least one disk")
				}
				d := st.VMs[0].Disks[0]
				rel := strings.TrimPrefix(d.FlatDatastorePath, "["+d.Datastore+"] ")
				fmt.Fprintf(&b, "    transport: file\n    datastore_paths:\n      %s: %s\n", d.Datastore, strings.TrimSuffix(d.FlatPath, "/"+rel))
			default:
				return fmt.Errorf("--transport must be https, nbd or file, not %q", transport)
			}
			_, err = io.WriteString(stdout, b.String())
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory of the serving lab (its lab.json)")
	f.StringVar(&name, "name", "lab", "source name in the agent configuration")
	f.StringVar(&stateDir, "state-dir", "", "agent state directory to put in the configuration")
	f.StringVar(&transport, "transport", "https", "disk transport: https, nbd (nbdkit curl) or file")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}

// diskFlags adds the --dir, --vm and --disk flags that name a disk of a serving lab.
func diskFlags(cmd *cobra.Command, dir, vm, disk *string) {
	f := cmd.Flags()
	f.StringVar(dir, "dir", "", "directory of the serving lab (its lab.json)")
	f.StringVar(vm, "vm", "", "VM name")
	f.StringVar(disk, "disk", "", "disk ID, e.g. disk-2000")
	for _, name := range []string{"dir", "vm", "disk"} {
		_ = cmd.MarkFlagRequired(name)
	}
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// debugWriter turns standard-logger lines into debug records.
type debugWriter struct{ log *slog.Logger }

func (w debugWriter) Write(p []byte) (int, error) {
	w.log.Debug("simulator: " + strings.TrimSpace(string(p)))
	return len(p), nil
}

func randomSeed() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return int64(binary.LittleEndian.Uint64(b[:]) >> 1)
}

func newMachineLimitCmd(stdout io.Writer) *cobra.Command {
	var (
		img   machinelimit.Image
		cores int
	)
	cmd := &cobra.Command{
		Use:   "machine-limit --image FILE --size N --data N --compressible-offset N --compressible-length N",
		Short: "Measure each backup stage's rate per CPU second and the fastest backup the cores allow",
		Long: `Measure, per CPU second, reading the image, SHA-256, zstd (fastest) on its compressible
part, TLS 1.3 on loopback (both ends) and zstd decoding, then print one line per stage
("stage<TAB>MB/s<TAB>CPU seconds for this image") and the limit ("limit<TAB>MB/s of image<TAB>seconds"):
the CPU time of all stages spread over the cores.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if img.Path == "" || img.Size <= 0 || img.Data <= 0 {
				return errors.New("--image, --size and --data are required")
			}
			l, err := machinelimit.Measure(cmd.Context(), img, cores)
			if err != nil {
				return err
			}
			for _, s := range l.Stages {
				fmt.Fprintf(stdout, "%s\t%.0f\t%.2f\n", s.Name, s.Rate/1e6, s.Seconds())
			}
			_, err = fmt.Fprintf(stdout, "limit\t%.0f\t%.2f\n", l.Rate/1e6, l.Seconds)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&img.Path, "image", "", "the disk image file")
	f.Int64Var(&img.Size, "size", 0, "the image's size in bytes, holes included")
	f.Int64Var(&img.Data, "data", 0, "the bytes of the image that are data (a backup reads, hashes and sends them)")
	f.Int64Var(&img.CompressibleOffset, "compressible-offset", 0, "where the compressible part starts")
	f.Int64Var(&img.CompressibleLength, "compressible-length", 0, "the compressible part's length (zstd runs on it)")
	f.IntVar(&cores, "cores", runtime.NumCPU(), "cores to spread the stages over")
	return cmd
}

func newLatencyProxyCmd(stdout io.Writer) *cobra.Command {
	var (
		listen, target string
		rtt            time.Duration
		window         int
	)
	cmd := &cobra.Command{
		Use:   "latency-proxy --target HOST:PORT --rtt 100ms [--listen 127.0.0.1:0] [--window BYTES]",
		Short: "Forward TCP to a target with a round-trip time added, as a wide-area link would",
		Long: `Forward every TCP connection to --target, each byte delivered half of --rtt after it was
sent, with at most --window bytes unacknowledged per direction (acknowledged a round trip after
sending, as a TCP receiver's window allows; default: the maximum of net.ipv4.tcp_rmem). Prints the
address it listens on, then serves until interrupted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if target == "" {
				return errors.New("--target is required")
			}
			p, err := netdelay.Listen(listen, target, rtt, window)
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintln(stdout, p.Addr()); err != nil {
				_ = p.Close()
				return err
			}
			return p.Serve(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:0", "the address to listen on")
	f.StringVar(&target, "target", "", "the address to forward to")
	f.DurationVar(&rtt, "rtt", 100*time.Millisecond, "the round-trip time to add")
	f.IntVar(&window, "window", netdelay.DefaultWindow(), "the most bytes in flight per direction of a connection")
	return cmd
}
