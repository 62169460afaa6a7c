package repository

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sendense/sendense/hub/internal/repository/store"
	"github.com/sendense/sendense/shared/api"
)

// A repository describes its own restore points: next to the indexes of each successful backup
// it keeps a backup record, backups/<vm instance uuid>/<backup id>.json, with everything a
// catalog needs to list and restore the backup — the VM and where it came from, each disk with
// its index, the times, the type and parent, the digest of the VM configuration and whether the
// backup is protected. A hub that lost its catalog rebuilds it from these records (Attach).
// Records are sealed like indexes in an encrypted repository. Unlike indexes they change: a
// record is rewritten when the backup is protected or unprotected, and removed with the backup.

// BackupRecordVersion is the format version of backup records this hub writes and reads.
const BackupRecordVersion = 1

// maxBackupRecordBytes bounds a backup record: a VM has at most a few hundred disks, each
// described in well under 2 KiB.
const maxBackupRecordBytes = 1 << 20

const (
	backupRecordPrefix = "backups/"
	backupRecordExt    = ".json"
)

// ErrBackupRecordNotFound: the repository holds no record of that backup.
var ErrBackupRecordNotFound = errors.New("backup record not found")

// BackupRecord describes one successful backup in its repository. Its JSON is the stored format:
// fields are only ever added.
type BackupRecord struct {
	Version  int    `json:"version"`
	BackupID string `json:"backup_id"`
	// Agent is the agent that took the backup, Source the vCenter or ESXi it read it from.
	Agent  RecordAgent  `json:"agent"`
	Source RecordSource `json:"source"`
	VM     RecordVM     `json:"vm"`

	RequestedType     string            `json:"requested_type"`
	Type              string            `json:"type"` // full or incremental
	SnapshotName      string            `json:"snapshot_name,omitempty"`
	SnapshotCreatedAt time.Time         `json:"snapshot_created_at,omitzero"`
	CreatedAt         time.Time         `json:"created_at"`
	StartedAt         time.Time         `json:"started_at,omitzero"`
	FinishedAt        time.Time         `json:"finished_at,omitzero"`
	BytesRead         int64             `json:"bytes_read"`
	BytesSent         int64             `json:"bytes_sent"`
	BytesDeduplicated int64             `json:"bytes_deduplicated"`
	BytesZero         int64             `json:"bytes_zero"`
	BytesTotal        int64             `json:"bytes_total"`
	SkippedDisks      []api.SkippedDisk `json:"skipped_disks,omitempty"`
	// VMConfigDigest is the SHA-256 of the VM configuration stored with the backup
	// (vmconfigs/<vm uuid>/<backup id>.json); empty when none was captured.
	VMConfigDigest string  `json:"vm_config_digest,omitempty"`
	Protected      bool    `json:"protected"`
	Notes          string  `json:"notes,omitempty"`
	CBTSample      float64 `json:"cbt_sample,omitempty"`
	CBTDrift       bool    `json:"cbt_drift,omitempty"`

	Disks []RecordDisk `json:"disks"`
}

// RecordAgent is the agent that took a backup.
type RecordAgent struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Hostname string `json:"hostname,omitempty"`
}

// RecordSource is the vCenter or ESXi endpoint a backup was read from.
type RecordSource struct {
	Name         string `json:"name"`
	URL          string `json:"url,omitempty"`
	InstanceUUID string `json:"instance_uuid,omitempty"`
}

// RecordVM is the backed-up VM as the inventory knew it when the backup finished.
type RecordVM struct {
	ContextID    string `json:"context_id"`
	InstanceUUID string `json:"instance_uuid"`
	BIOSUUID     string `json:"bios_uuid,omitempty"`
	Name         string `json:"name"`
	GuestOS      string `json:"guest_os,omitempty"`
	NumCPU       int    `json:"num_cpu,omitempty"`
	MemoryMB     int64  `json:"memory_mb,omitempty"`
	Datacenter   string `json:"datacenter,omitempty"`
	Cluster      string `json:"cluster,omitempty"`
	Host         string `json:"host,omitempty"`
	Folder       string `json:"folder,omitempty"`
	CBTEnabled   bool   `json:"cbt_enabled,omitempty"`
}

// RecordDisk is one disk of a backup: its result and the inventory's description of the disk.
type RecordDisk struct {
	DiskID            string    `json:"disk_id"`
	Type              string    `json:"type"`
	Reason            string    `json:"reason,omitempty"`
	ParentBackupID    string    `json:"parent_backup_id,omitempty"`
	BaseChangeID      string    `json:"base_change_id,omitempty"`
	ChangeID          string    `json:"change_id,omitempty"`
	CapacityBytes     int64     `json:"capacity_bytes"`
	ChunkSize         int64     `json:"chunk_size"`
	SlotsTotal        int64     `json:"slots_total"`
	SlotsChanged      int64     `json:"slots_changed"`
	BytesRead         int64     `json:"bytes_read"`
	BytesSent         int64     `json:"bytes_sent"`
	BytesDeduplicated int64     `json:"bytes_deduplicated"`
	BytesZero         int64     `json:"bytes_zero"`
	IndexPath         string    `json:"index_path"`
	IndexDigest       string    `json:"index_digest"`
	CBTDrift          bool      `json:"cbt_drift,omitempty"`
	StartedAt         time.Time `json:"started_at,omitzero"`
	FinishedAt        time.Time `json:"finished_at,omitzero"`

	DeviceKey      int32  `json:"device_key"`
	Label          string `json:"label,omitempty"`
	Datastore      string `json:"datastore,omitempty"`
	VMDKPath       string `json:"vmdk_path,omitempty"`
	BackingType    string `json:"backing_type,omitempty"`
	Provisioning   string `json:"provisioning,omitempty"`
	ControllerType string `json:"controller_type,omitempty"`
	ControllerBus  int32  `json:"controller_bus"`
	UnitNumber     int32  `json:"unit_number"`
	DiskMode       string `json:"disk_mode,omitempty"`
}

// Check refuses a record that cannot describe a restorable backup: the wrong version, ids that
// are not safe key components, no disk, or a disk without its index.
func (b *BackupRecord) Check() error {
	if b.Version != BackupRecordVersion {
		return fmt.Errorf("backup record version %d, this hub reads %d", b.Version, BackupRecordVersion)
	}
	// The backup id and the VM's UUID name the record's key (and the indexes'); the other ids
	// are only catalog keys.
	for _, c := range []struct{ name, v string }{{"backup id", b.BackupID}, {"vm uuid", b.VM.InstanceUUID}} {
		if err := checkComponent(c.v); err != nil {
			return fmt.Errorf("backup record: %s %q: %s", c.name, c.v, err)
		}
	}
	if b.VM.ContextID == "" || b.Agent.ID == "" || b.Source.Name == "" || b.VM.Name == "" {
		return fmt.Errorf("backup record %s: no vm context id, agent id, source or vm name", b.BackupID)
	}
	if b.Type != api.BackupFull && b.Type != api.BackupIncremental {
		return fmt.Errorf("backup record %s: type %q", b.BackupID, b.Type)
	}
	if len(b.Disks) == 0 {
		return fmt.Errorf("backup record %s: no disks", b.BackupID)
	}
	for _, d := range b.Disks {
		if err := checkComponent(d.DiskID); err != nil {
			return fmt.Errorf("backup record %s: disk id %q: %s", b.BackupID, d.DiskID, err)
		}
		if d.IndexPath == "" || d.IndexDigest == "" || d.CapacityBytes <= 0 || d.ChunkSize <= 0 {
			return fmt.Errorf("backup record %s: disk %s has no index or no size", b.BackupID, d.DiskID)
		}
	}
	return nil
}

func backupRecordKey(vmUUID, backupID string) string {
	return backupRecordPrefix + vmUUID + "/" + backupID + backupRecordExt
}

// WriteBackupRecord stores (or replaces) the record of a backup durably: when it returns nil
// the record survives a crash, and readers see the old record or the new one. Safe for
// concurrent use; of concurrent writes of one record, one wins.
func (r *Repository) WriteBackupRecord(ctx context.Context, rec *BackupRecord) error {
	if err := rec.Check(); err != nil {
		return fmt.Errorf("write backup record: %w", err)
	}
	key := backupRecordKey(rec.VM.InstanceUUID, rec.BackupID)
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("write backup record %s: %w", key, err)
	}
	if len(b) > maxBackupRecordBytes {
		return fmt.Errorf("write backup record %s: %d bytes, more than %d", key, len(b), maxBackupRecordBytes)
	}
	stored, err := r.sealObject(key, append(b, '\n'))
	if err != nil {
		return fmt.Errorf("write backup record %s: %w", key, err)
	}
	if err := r.store.Put(ctx, key, stored); err != nil {
		return fmt.Errorf("write backup record %s: %w", key, err)
	}
	return nil
}

// ReadBackupRecord reads and checks the record of one backup: ErrBackupRecordNotFound when
// there is none.
func (r *Repository) ReadBackupRecord(ctx context.Context, vmUUID, backupID string) (*BackupRecord, error) {
	if err := errors.Join(checkComponent(vmUUID), checkComponent(backupID)); err != nil {
		return nil, fmt.Errorf("read backup record: %w: %w", ErrInvalidRef, err)
	}
	return r.readBackupRecord(ctx, backupRecordKey(vmUUID, backupID))
}

func (r *Repository) readBackupRecord(ctx context.Context, key string) (*BackupRecord, error) {
	b, err := r.store.Get(ctx, key, nil, maxBackupRecordBytes+r.objectOverhead())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("read backup record %s: %w", key, ErrBackupRecordNotFound)
	case err != nil:
		return nil, fmt.Errorf("read backup record %s: %w", key, err)
	}
	if b, err = r.openObject(key, b); err != nil {
		return nil, fmt.Errorf("read backup record %s: %w", key, err)
	}
	rec := new(BackupRecord)
	if err := json.Unmarshal(b, rec); err != nil {
		return nil, fmt.Errorf("read backup record %s: %w", key, err)
	}
	if err := rec.Check(); err != nil {
		return nil, fmt.Errorf("read backup record %s: %w", key, err)
	}
	if key != backupRecordKey(rec.VM.InstanceUUID, rec.BackupID) {
		return nil, fmt.Errorf("read backup record %s: it describes backup %s of vm %s", key, rec.BackupID, rec.VM.InstanceUUID)
	}
	return rec, nil
}

// RemoveBackupRecord deletes the record of a backup durably; none is not an error (a backup
// taken before records were written has none).
func (r *Repository) RemoveBackupRecord(ctx context.Context, vmUUID, backupID string) error {
	if err := errors.Join(checkComponent(vmUUID), checkComponent(backupID)); err != nil {
		return fmt.Errorf("remove backup record: %w: %w", ErrInvalidRef, err)
	}
	key := backupRecordKey(vmUUID, backupID)
	if err := r.store.Remove(ctx, key); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("remove backup record %s: %w", key, err)
	}
	return nil
}

// WalkBackupRecords calls fn for every backup record of the repository, in ascending order of
// their keys. A record that cannot be read or fails its checks is passed to bad (with its key)
// and skipped, so one damaged record does not hide the others. An error from fn or bad stops the
// walk and is returned as is.
func (r *Repository) WalkBackupRecords(ctx context.Context, fn func(rec *BackupRecord) error, bad func(key string, err error) error) error {
	var keys []string
	err := r.store.List(ctx, backupRecordPrefix, func(info store.Info) error {
		if strings.HasSuffix(info.Key, backupRecordExt) {
			keys = append(keys, info.Key)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk backup records: %w", err)
	}
	for _, key := range keys {
		rec, err := r.readBackupRecord(ctx, key)
		if errors.Is(err, ErrBackupRecordNotFound) {
			continue // removed since the listing
		}
		if err != nil {
			if err := bad(key, err); err != nil {
				return err
			}
			continue
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	return nil
}
