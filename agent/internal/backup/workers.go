package backup

// uploadWorkers is how many upload workers fit the memory cap maxInFlight: each worker holds
// groupSlots slot buffers, one compression output buffer and its zstd encoder, whose history
// takes about one more slot (measured: 4 MiB for 4 MiB slots), all counted as chunkSize bytes. There is always at
// least one worker (a cap below one worker's need is exceeded rather than never uploading) and
// never more than 16.
func uploadWorkers(maxInFlight int64, groupSlots int, chunkSize int64) int {
	perWorker := int64(groupSlots+2) * chunkSize
	return int(max(1, min(maxInFlight/perWorker, 16)))
}
