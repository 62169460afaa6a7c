package catalog

import "github.com/sendense/sendense/shared/api"

// Wire returns the disk's result as the API shows it, with its duration and throughput.
func (d *BackupDisk) Wire() api.BackupDisk {
	bd := api.BackupDisk{
		DiskID: d.DiskID, Type: d.Type, Reason: d.Reason, ParentBackupID: d.ParentJobID, BaseChangeID: d.BaseChangeID,
		ChangeID: d.ChangeID, CapacityBytes: d.CapacityBytes, ChunkSize: d.ChunkSize, SlotsTotal: d.SlotsTotal,
		SlotsChanged: d.SlotsChanged, BytesRead: d.BytesRead, BytesSent: d.BytesSent, BytesDeduplicated: d.BytesDeduplicated,
		BytesZero: d.BytesZero, Status: d.Status, CBTDrift: d.CBTDrift, Error: d.Error, StartedAt: d.StartedAt, FinishedAt: d.FinishedAt,
	}
	if !d.StartedAt.IsZero() && !d.FinishedAt.IsZero() {
		bd.DurationSeconds = d.FinishedAt.Sub(d.StartedAt).Seconds()
		if bd.DurationSeconds > 0 {
			bd.ThroughputBPS = float64(d.BytesRead) / bd.DurationSeconds
		}
	}
	return bd
}
