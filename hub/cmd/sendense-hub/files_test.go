package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/files/filestest"
	"github.com/sendense/sendense/hub/internal/ingest"
	"github.com/sendense/sendense/hub/internal/inventory"
	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// backupDisk stores img as disk-2000 of a succeeded full backup in the catalog and default
// repository of dataDir, through the same services the agent's requests reach, and returns
// the backup's id.
func backupDisk(t *testing.T, dataDir string, img []byte) string {
	t.Helper()
	return backupDiskOf(t, dataDir, img, false)
}

// backupDiskOf is backupDisk, with the VM's configuration recorded as an agent captures it
// when withConfig (restores as a new VM and instant recovery need it).
func backupDiskOf(t *testing.T, dataDir string, img []byte, withConfig bool) string {
	t.Helper()
	ctx, log := t.Context(), slog.New(slog.DiscardHandler)
	cat, err := catalog.Open(ctx, catalog.Options{SQLitePath: filepath.Join(dataDir, "catalog.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	repos := repository.NewRegistry(cat, nil, nil)
	defer repos.Close()
	if _, err := repos.Create(ctx, repository.DefaultName, filepath.Join(dataDir, "repo"), 64<<10); err != nil {
		t.Fatal(err)
	}
	if err := cat.CreateJoinToken(ctx, &catalog.JoinToken{ID: "jt-1", SecretHash: "h", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	a := &catalog.Agent{ID: "agent-1", Name: "a1", Hostname: "h", Status: api.AgentActive, CertSerial: "1", CertFingerprint: "f", CertNotAfter: time.Now().Add(time.Hour)}
	if err := cat.RedeemJoinToken(ctx, "jt-1", "h", a); err != nil {
		t.Fatal(err)
	}
	inv := &api.Inventory{Source: api.Source{Name: "vc1", InstanceUUID: "0ba3d9a4-0000-4000-8000-0000000000aa"}, VMs: []api.VM{{
		InstanceUUID: "50120000-0000-4000-8000-000000000001", Name: "pgtest1", CBTEnabled: true,
		Disks: []api.Disk{{Key: 2000, DiskID: "disk-2000", CapacityBytes: int64(len(img)), Backupable: true}},
	}}}
	if _, err := inventory.New(cat, log, nil).Apply(ctx, "agent-1", "127.0.0.1", inv); err != nil {
		t.Fatal(err)
	}
	js := jobs.New(cat, repos, log, nil, jobs.Options{})
	if _, err := js.Start(ctx, api.StartBackupRequest{VM: "pgtest1"}); err != nil {
		t.Fatal(err)
	}
	job, err := js.NextJob(ctx, "agent-1", nil, 0)
	if err != nil || job == nil {
		t.Fatalf("claim: %v %v", job, err)
	}
	if withConfig {
		ctrl := api.DeviceController{Key: 1000, Type: "pvscsi"}
		if err := js.PutVMConfig(ctx, "agent-1", job.ID, api.VMConfig{
			Version: api.VMConfigVersion, InstanceUUID: inv.VMs[0].InstanceUUID, Name: "pgtest1", HardwareVersion: "vmx-21",
			GuestID: "otherLinux64Guest", Firmware: "bios", NumCPU: 1, CoresPerSocket: 1, MemoryMB: 1024,
			Controllers: []api.VMController{{Key: 1000, Type: "pvscsi", Sharing: "noSharing"}},
			Disks:       []api.VMConfigDisk{{DiskID: "disk-2000", Key: 2000, CapacityBytes: int64(len(img)), Controller: ctrl, Provisioning: "thin"}},
			NICs:        []api.VMNIC{{Key: 4000, AdapterType: "vmxnet3", BackingType: "network", Network: "VM Network", Connected: true}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	ing := ingest.New(cat, repos, log, nil, ingest.Options{})
	const cs = 64 << 10
	s, err := ing.OpenSession(ctx, "agent-1", job.ID, "disk-2000", api.OpenSessionRequest{Type: "full", CapacityBytes: int64(len(img)), ChunkSize: cs})
	if err != nil {
		t.Fatal(err)
	}
	plain := map[string][]byte{}
	holders := map[string][]int64{}
	for lo := int64(0); lo < s.SlotCount; lo += api.MaxSlotBatch {
		var batch api.SlotBatch
		for sl := lo; sl < min(lo+api.MaxSlotBatch, s.SlotCount); sl++ {
			p := img[sl*cs : min(int64(len(img)), (sl+1)*cs)]
			d := chunk.Sum(p).String()
			plain[d] = p
			holders[d] = append(holders[d], sl)
			batch.Slots = append(batch.Slots, api.SlotDigest{Slot: sl, Digest: d})
		}
		res, err := ing.RecordSlots(ctx, "agent-1", s.ID, batch)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range res.Missing {
			blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(plain[d]), plain[d])
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ing.PutChunk(ctx, "agent-1", s.ID, d, holders[d], bytes.NewReader(blob), int64(len(blob))); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := ing.Commit(ctx, "agent-1", s.ID, api.CommitRequest{SlotsChanged: s.SlotCount}); err != nil {
		t.Fatal(err)
	}
	if err := js.Complete(ctx, "agent-1", job.ID, api.JobCompletion{Status: api.JobSucceeded}); err != nil {
		t.Fatal(err)
	}
	return job.ID
}

func TestFilesCommands(t *testing.T) {
	dataDir := t.TempDir()
	hub := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(t.Context(), append(args, "--data-dir", dataDir), &out, io.Discard, noEnv)
		return out.String(), err
	}
	if _, err := hub("migrate", "up"); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(filepath.Join(src, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	hosts := []byte("127.0.0.1 localhost\n")
	if err := os.WriteFile(filepath.Join(src, "etc", "hosts"), hosts, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("hosts", filepath.Join(src, "etc", "hosts-link")); err != nil {
		t.Fatal(err)
	}
	id := backupDisk(t, dataDir, filestest.GPTDisk(filestest.MkfsExt4(t, src, 4<<20)))

	out, err := hub("files", "ls", "--backup", id, "--disk", "disk-2000", "--path", "/p1/etc")
	if err != nil || !strings.Contains(out, "hosts-link -> hosts") || !strings.Contains(out, "0644") || !strings.Contains(out, "/p1/etc: 2 entries") {
		t.Fatalf("files ls: %v\n%s", err, out)
	}
	out, err = hub("files", "ls", "--backup", id, "--disk", "disk-2000", "--json")
	var l api.FileList
	if err != nil || json.Unmarshal([]byte(out), &l) != nil || l.Path != "/" || len(l.Entries) != 1 || l.Entries[0].Name != "p1" {
		t.Fatalf("files ls --json: %v\n%s", err, out)
	}
	if out, err := hub("files", "get", "--backup", id, "--disk", "disk-2000", "--path", "/p1/etc/hosts"); err != nil || out != string(hosts) {
		t.Fatalf("files get to stdout: %v %q", err, out)
	}
	dst := filepath.Join(t.TempDir(), "hosts")
	if _, err := hub("files", "get", "--backup", id, "--disk", "disk-2000", "--path", "/p1/etc/hosts", "--output", dst); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, hosts) {
		t.Fatalf("files get --output: %q %v", got, err)
	}
	for _, tc := range []struct{ path, want string }{
		{"/p1/../../x", "above the root"},
		{"/p1/etc/nothing", "no such file"},
		{"/p1/etc", "not a regular file"},
	} {
		if _, err := hub("files", "get", "--backup", id, "--disk", "disk-2000", "--path", tc.path, "--output", filepath.Join(t.TempDir(), "x")); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("files get %s: %v, want %q", tc.path, err, tc.want)
		}
	}
	// The downloads are audited, as over the API.
	out, err = hub("events", "list", "--type", "audit")
	if err != nil || strings.Count(out, "file=/p1/etc/hosts") != 2 || !strings.Contains(out, "command=files get") {
		t.Fatalf("audit events: %v\n%s", err, out)
	}
}
