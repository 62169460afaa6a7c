package repository

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/shared/api"
)

// RecordOf returns the backup record of a backup's catalog rows.
func RecordOf(b *catalog.BackupRows) *BackupRecord {
	j := &b.Job
	rec := &BackupRecord{
		Version: BackupRecordVersion, BackupID: j.ID,
		Agent:  RecordAgent{ID: b.Agent.ID, Name: b.Agent.Name, Hostname: b.Agent.Hostname},
		Source: RecordSource{Name: b.Source.Name, URL: b.Source.URL, InstanceUUID: b.Source.InstanceUUID},
		VM: RecordVM{ContextID: b.VM.ContextID, InstanceUUID: b.VM.InstanceUUID, BIOSUUID: b.VM.BIOSUUID, Name: b.VM.VMName,
			GuestOS: b.VM.GuestOS, NumCPU: b.VM.NumCPU, MemoryMB: b.VM.MemoryMB, Datacenter: b.VM.Datacenter, Cluster: b.VM.Cluster,
			Host: b.VM.Host, Folder: b.VM.Folder, CBTEnabled: b.VM.CBTEnabled},
		RequestedType: j.RequestedType, Type: j.Type, SnapshotName: j.SnapshotName, SnapshotCreatedAt: j.SnapshotCreatedAt,
		CreatedAt: j.CreatedAt, StartedAt: j.StartedAt, FinishedAt: j.FinishedAt,
		BytesRead: j.BytesRead, BytesSent: j.BytesSent, BytesDeduplicated: j.BytesDeduplicated, BytesZero: j.BytesZero, BytesTotal: j.BytesTotal,
		SkippedDisks: j.SkippedDisks, VMConfigDigest: j.VMConfigDigest, Protected: j.Protected, Notes: j.Notes,
		CBTSample: j.CBTSample, CBTDrift: j.CBTDrift,
	}
	for _, d := range b.Disks {
		rd := RecordDisk{DiskID: d.DiskID, Type: d.Type, Reason: d.Reason, ParentBackupID: d.ParentJobID, BaseChangeID: d.BaseChangeID,
			ChangeID: d.ChangeID, CapacityBytes: d.CapacityBytes, ChunkSize: d.ChunkSize, SlotsTotal: d.SlotsTotal, SlotsChanged: d.SlotsChanged,
			BytesRead: d.BytesRead, BytesSent: d.BytesSent, BytesDeduplicated: d.BytesDeduplicated, BytesZero: d.BytesZero,
			IndexPath: d.IndexPath, IndexDigest: d.IndexDigest, CBTDrift: d.CBTDrift, StartedAt: d.StartedAt, FinishedAt: d.FinishedAt}
		if i := slices.IndexFunc(b.VMDisks, func(v catalog.VMDisk) bool { return v.DiskID == d.DiskID }); i >= 0 {
			v := b.VMDisks[i]
			rd.DeviceKey, rd.Label, rd.Datastore, rd.VMDKPath, rd.BackingType = v.DeviceKey, v.Label, v.Datastore, v.VMDKPath, v.BackingType
			rd.Provisioning, rd.ControllerType, rd.ControllerBus, rd.UnitNumber, rd.DiskMode = v.Provisioning, v.ControllerType, v.ControllerBus, v.UnitNumber, v.DiskMode
		}
		rec.Disks = append(rec.Disks, rd)
	}
	return rec
}

// Rows returns the catalog rows the record describes, the backup being in the repository with
// catalog id repositoryID.
func (b *BackupRecord) Rows(repositoryID string) *catalog.BackupRows {
	rows := &catalog.BackupRows{
		Agent:  catalog.Agent{ID: b.Agent.ID, Name: b.Agent.Name, Hostname: b.Agent.Hostname},
		Source: catalog.Source{AgentID: b.Agent.ID, Name: b.Source.Name, URL: b.Source.URL, InstanceUUID: b.Source.InstanceUUID},
		VM: catalog.VMContext{ContextID: b.VM.ContextID, AgentID: b.Agent.ID, InstanceUUID: b.VM.InstanceUUID, BIOSUUID: b.VM.BIOSUUID,
			VMName: b.VM.Name, GuestOS: b.VM.GuestOS, NumCPU: b.VM.NumCPU, MemoryMB: b.VM.MemoryMB, Datacenter: b.VM.Datacenter,
			Cluster: b.VM.Cluster, Host: b.VM.Host, Folder: b.VM.Folder, CBTEnabled: b.VM.CBTEnabled},
		Job: catalog.BackupJob{ID: b.BackupID, VMContextID: b.VM.ContextID, AgentID: b.Agent.ID, RepositoryID: repositoryID,
			RequestedType: b.RequestedType, Type: b.Type, Status: api.JobSucceeded, SnapshotName: b.SnapshotName,
			SnapshotCreatedAt: b.SnapshotCreatedAt, StartedAt: b.StartedAt, FinishedAt: b.FinishedAt, BytesRead: b.BytesRead,
			BytesSent: b.BytesSent, BytesDeduplicated: b.BytesDeduplicated, BytesZero: b.BytesZero, BytesTotal: b.BytesTotal,
			SkippedDisks: b.SkippedDisks, VMConfigDigest: b.VMConfigDigest, Protected: b.Protected, Notes: b.Notes,
			CBTSample: b.CBTSample, CBTDrift: b.CBTDrift, CreatedAt: b.CreatedAt, Phase: api.PhaseFinished},
	}
	for _, d := range b.Disks {
		rows.Disks = append(rows.Disks, catalog.BackupDisk{JobID: b.BackupID, VMContextID: b.VM.ContextID, DiskID: d.DiskID, Type: d.Type,
			Reason: d.Reason, ParentJobID: d.ParentBackupID, BaseChangeID: d.BaseChangeID, ChangeID: d.ChangeID, CapacityBytes: d.CapacityBytes,
			ChunkSize: d.ChunkSize, SlotsTotal: d.SlotsTotal, SlotsChanged: d.SlotsChanged, BytesRead: d.BytesRead, BytesSent: d.BytesSent,
			BytesDeduplicated: d.BytesDeduplicated, BytesZero: d.BytesZero, IndexPath: d.IndexPath, IndexDigest: d.IndexDigest,
			CBTDrift: d.CBTDrift, StartedAt: d.StartedAt, FinishedAt: d.FinishedAt})
		rows.VMDisks = append(rows.VMDisks, catalog.VMDisk{VMContextID: b.VM.ContextID, DiskID: d.DiskID, DeviceKey: d.DeviceKey,
			Label: d.Label, CapacityBytes: d.CapacityBytes, Datastore: d.Datastore, VMDKPath: d.VMDKPath, BackingType: d.BackingType,
			Provisioning: d.Provisioning, ControllerType: d.ControllerType, ControllerBus: d.ControllerBus, UnitNumber: d.UnitNumber,
			DiskMode: d.DiskMode, Backupable: true})
	}
	return rows
}

// BackupImporter records backups rebuilt from a repository (*catalog.Catalog).
type BackupImporter interface {
	// ImportBackup records the backup and whatever it belongs to that the catalog lacks, in one
	// transaction, and reports whether the backup was new; a known backup is left as it is.
	ImportBackup(ctx context.Context, b *catalog.BackupRows) (imported bool, err error)
	// AttachedCopyRefusal says why a known backup found in another repository than its home
	// cannot be a copy there ("" when it can); RecordAttachedCopy records it, pending until
	// verified, checked again, and reports why not otherwise.
	AttachedCopyRefusal(ctx context.Context, b *catalog.BackupRows, repositoryID string) (why string, err error)
	RecordAttachedCopy(ctx context.Context, b *catalog.BackupRows, repositoryID string) (recorded bool, why string, err error)
}

// AttachRequest names an existing repository for Attach: a directory (Path) or an S3 bucket
// (S3Settings), and for an encrypted one the file that unlocks it.
type AttachRequest struct {
	Name string
	Path string
	api.S3Settings
	PasswordFile string
}

// AttachReport says what Attach found and did.
type AttachReport struct {
	Repository catalog.Repository
	// Recorded is true when the repository was new to the catalog.
	Recorded bool
	// Imported are the backups that were rebuilt into the catalog, Known those it had already.
	// Copies are the known backups whose home is another repository, recorded as copies here.
	Imported []string
	Known    []string
	Copies   []string
	// Damaged are records that could not be read or whose indexes are missing, with why; their
	// backups are not imported.
	Damaged []string
	// Unrecorded are indexes of backups the repository holds no record of: backups taken before
	// repositories described their backups, or whose record was lost. They are not imported.
	Unrecorded []IndexRef
}

// Attach records an existing repository under a name — the repository a lost or another hub
// used — and rebuilds in the catalog every backup the repository describes (its backup records),
// under the same backup ids, restorable at once. The repository must exist (ErrNotRepository);
// an encrypted one needs its password file. Attaching a repository the catalog already knows
// under the same name records nothing and imports only the backups the catalog lacks, so
// attaching twice changes nothing; under another name it is refused (catalog.ErrConflict), as is
// a name another repository has.
func (g *Registry) Attach(ctx context.Context, req AttachRequest, imp BackupImporter) (*AttachReport, error) {
	if err := CheckName(req.Name); err != nil {
		return nil, err
	}
	rec, err := g.attachRecord(req)
	if err != nil {
		return nil, err
	}
	r, err := g.openRecord(ctx, rec, rec.PasswordFile)
	if err != nil {
		return nil, fmt.Errorf("attach repository %q: %w", req.Name, err)
	}
	rec.ID, rec.ChunkSize = r.ID(), r.ChunkSize()
	rep := &AttachReport{}
	switch have, err := g.cat.RepositoryByID(ctx, rec.ID); {
	case err == nil && have.Name != req.Name:
		_ = r.Close()
		return nil, fmt.Errorf("repository %s is attached already, as %q: %w", rec.ID, have.Name, catalog.ErrConflict)
	case err == nil:
		rep.Repository = *have
		r = g.keep(rec.ID, r)
	case errors.Is(err, catalog.ErrNotFound):
		if _, err := g.cat.RepositoryByName(ctx, req.Name); err == nil {
			_ = r.Close()
			return nil, fmt.Errorf("repository %q: %w", req.Name, catalog.ErrConflict)
		}
		if err := g.cat.CreateRepository(ctx, rec); err != nil {
			_ = r.Close()
			return nil, err
		}
		rep.Repository, rep.Recorded = *rec, true
		r = g.keep(rec.ID, r)
	default:
		_ = r.Close()
		return nil, err
	}

	recorded := map[string]bool{}
	err = r.WalkBackupRecords(ctx, func(b *BackupRecord) error {
		recorded[b.BackupID] = true
		for _, d := range b.Disks {
			ref := IndexRef{VMUUID: b.VM.InstanceUUID, DiskID: d.DiskID, BackupID: b.BackupID}
			if _, err := r.store.Stat(ctx, indexKey(ref)); err != nil {
				// A record whose index is gone describes a backup that cannot be restored.
				rep.Damaged = append(rep.Damaged, fmt.Sprintf("backup %s: index %s: %v", b.BackupID, ref, err))
				return nil
			}
		}
		rows := b.Rows(rec.ID)
		imported, err := imp.ImportBackup(ctx, rows)
		if err != nil {
			return fmt.Errorf("import backup %s: %w", b.BackupID, err)
		}
		if imported {
			rep.Imported = append(rep.Imported, b.BackupID)
			return nil
		}
		rep.Known = append(rep.Known, b.BackupID)
		// A backup the catalog holds may live elsewhere, this being a repository of its copies
		// attached after its home: recorded as a copy when the catalog names the same restore
		// point and its indexes read back so, with every chunk they name.
		why, err := imp.AttachedCopyRefusal(ctx, rows, rec.ID)
		if err != nil {
			return fmt.Errorf("look at the copy of backup %s: %w", b.BackupID, err)
		}
		if why == "" {
			why = indexesAsRecorded(ctx, r, b)
		}
		if why != "" {
			g.log.DebugContext(ctx, "known backup not recorded as a copy", "repository_id", rec.ID, "job_id", b.BackupID, "why", why)
			return nil
		}
		recorded, why, err := imp.RecordAttachedCopy(ctx, rows, rec.ID)
		if err != nil {
			return fmt.Errorf("record the copy of backup %s: %w", b.BackupID, err)
		}
		if recorded {
			rep.Copies = append(rep.Copies, b.BackupID)
		} else {
			g.log.DebugContext(ctx, "known backup not recorded as a copy", "repository_id", rec.ID, "job_id", b.BackupID, "why", why)
		}
		return nil
	}, func(key string, err error) error {
		g.log.WarnContext(ctx, "backup record unreadable", "repository_id", rec.ID, "key", key, "err", err)
		rep.Damaged = append(rep.Damaged, key+": "+err.Error())
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("attach repository %q: %w", req.Name, err)
	}
	err = r.WalkIndexes(ctx, func(ref IndexRef) error {
		if !recorded[ref.BackupID] {
			rep.Unrecorded = append(rep.Unrecorded, ref)
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("attach repository %q: %w", req.Name, err)
	}
	g.log.InfoContext(ctx, "repository attached", "repository_id", rec.ID, "name", req.Name, "recorded", rep.Recorded,
		"imported", len(rep.Imported), "known", len(rep.Known), "copies", len(rep.Copies), "damaged", len(rep.Damaged), "unrecorded_indexes", len(rep.Unrecorded))
	return rep, nil
}

// indexesAsRecorded reads every index of backup record b in r and its VM configuration, and
// says how one differs from the digest the record names, or lacks a chunk it names ("" when
// none does). Chunks are not read: the copy is recorded pending until verification reads them.
func indexesAsRecorded(ctx context.Context, r *Repository, b *BackupRecord) string {
	for _, d := range b.Disks {
		ref := IndexRef{VMUUID: b.VM.InstanceUUID, DiskID: d.DiskID, BackupID: b.BackupID}
		idx, err := r.ReadIndex(ctx, ref)
		if err != nil {
			return err.Error()
		}
		raw, err := idx.MarshalBinary()
		if err != nil {
			return fmt.Sprintf("index %s: %v", ref, err)
		}
		if sum := sha256.Sum256(raw); hex.EncodeToString(sum[:]) != d.IndexDigest {
			return fmt.Sprintf("index %s: sha-256 %x, the record names %s", ref, sum, d.IndexDigest)
		}
		// A copy may come to stand for the backup (a prune of its home moves the backup onto
		// it): every chunk its index names must be there, as a copy leaves them.
		missing, err := r.MissingChunks(ctx, idx.Referenced())
		if err != nil {
			return fmt.Sprintf("index %s: %v", ref, err)
		}
		if len(missing) > 0 {
			return fmt.Sprintf("index %s: %d chunks missing, %s the first", ref, len(missing), missing[0])
		}
	}
	if b.VMConfigDigest != "" {
		if _, err := r.ReadVMConfig(ctx, b.VM.InstanceUUID, b.BackupID, b.VMConfigDigest); err != nil {
			return err.Error()
		}
	}
	return ""
}

// attachRecord returns the catalog record of the repository req names, without its id.
func (g *Registry) attachRecord(req AttachRequest) (*catalog.Repository, error) {
	var err error
	pw := req.PasswordFile
	if pw != "" {
		if pw, err = filepath.Abs(pw); err != nil {
			return nil, fmt.Errorf("password file: %w", err)
		}
	}
	set := req.S3Settings
	switch {
	case set.S3Endpoint != "" && req.Path != "":
		return nil, &api.FieldError{Field: "path", Msg: "a repository is a directory (path) or an S3 bucket (s3_endpoint), not both"}
	case set.S3Endpoint == "":
		if req.Path == "" {
			return nil, &api.FieldError{Field: "path", Msg: "required: the directory of the repository"}
		}
		abs, err := filepath.Abs(req.Path)
		if err != nil {
			return nil, fmt.Errorf("repository path %s: %w", req.Path, err)
		}
		return &catalog.Repository{Name: req.Name, Kind: api.RepositoryLocal, Path: abs, PasswordFile: pw}, nil
	}
	for _, f := range []struct{ field, value string }{{"s3_bucket", set.S3Bucket}, {"s3_credentials_file", set.S3CredentialsFile}} {
		if f.value == "" {
			return nil, &api.FieldError{Field: f.field, Msg: "required for an S3 repository"}
		}
	}
	if set.S3CredentialsFile, err = filepath.Abs(set.S3CredentialsFile); err != nil {
		return nil, &api.FieldError{Field: "s3_credentials_file", Msg: err.Error()}
	}
	if set.S3CAFile != "" {
		if set.S3CAFile, err = filepath.Abs(set.S3CAFile); err != nil {
			return nil, &api.FieldError{Field: "s3_ca_file", Msg: err.Error()}
		}
	}
	set.S3Prefix = strings.Trim(set.S3Prefix, "/")
	return &catalog.Repository{Name: req.Name, Kind: api.RepositoryS3, Path: s3Location(set),
		S3Endpoint: set.S3Endpoint, S3Bucket: set.S3Bucket, S3Prefix: set.S3Prefix, S3Region: set.S3Region,
		S3CAFile: set.S3CAFile, S3CredentialsFile: set.S3CredentialsFile, PasswordFile: pw}, nil
}
