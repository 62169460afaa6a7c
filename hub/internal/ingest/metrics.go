package ingest

import "github.com/prometheus/client_golang/prometheus"

// metrics of the data intake.
type metrics struct {
	chunksReceived   prometheus.Counter
	chunkBytes       prometheus.Counter
	chunksDuplicate  prometheus.Counter
	digestMismatches prometheus.Counter
	badBlobs         prometheus.Counter
	slotsRecorded    prometheus.Counter
	uploadsRefused   prometheus.Counter
	uploadsInFlight  prometheus.Gauge
	// Upload memory, shared by all agents (Options.UploadMemory).
	uploadMemory         prometheus.Gauge
	uploadMemoryWaits    prometheus.Counter
	uploadsRefusedMemory prometheus.Counter
	cbtDrift             prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		chunksReceived:       prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_chunks_received_total", Help: "Chunks uploaded by agents and accepted (new or already stored)."}),
		chunkBytes:           prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_chunk_received_bytes_total", Help: "Bytes of chunk blobs uploaded by agents and accepted."}),
		chunksDuplicate:      prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_chunks_duplicate_total", Help: "Uploaded chunks the repository already held."}),
		digestMismatches:     prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_chunk_digest_mismatches_total", Help: "Uploaded chunks refused because their content did not hash to their name."}),
		badBlobs:             prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_chunk_rejected_total", Help: "Uploaded chunks refused as malformed (bad header, checksum or compression)."}),
		slotsRecorded:        prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_slots_recorded_total", Help: "Disk slots recorded in upload sessions."}),
		uploadsRefused:       prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_chunk_uploads_refused_busy_total", Help: "Chunk uploads refused (429) because their agent had too many in flight."}),
		uploadsInFlight:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "sendense_hub_chunk_uploads_in_flight", Help: "Chunk uploads being received now."}),
		uploadMemory:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "sendense_hub_chunk_upload_memory_bytes", Help: "Bytes of upload memory the chunk uploads in flight hold, all agents together."}),
		uploadMemoryWaits:    prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_chunk_upload_memory_waits_total", Help: "Chunk uploads that waited for upload memory held by others."}),
		uploadsRefusedMemory: prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_chunk_uploads_refused_memory_total", Help: "Chunk uploads refused (429) after waiting for upload memory as long as they may."}),
		cbtDrift:             prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_backups_cbt_drift_total", Help: "Disks of incrementals that found slots CBT called unchanged had changed (read in full instead)."}),
	}
	if reg != nil {
		reg.MustRegister(m.chunksReceived, m.chunkBytes, m.chunksDuplicate, m.digestMismatches, m.badBlobs, m.slotsRecorded, m.uploadsRefused, m.uploadsInFlight,
			m.uploadMemory, m.uploadMemoryWaits, m.uploadsRefusedMemory, m.cbtDrift)
	}
	return m
}
