package backup

// uploadWorkers is how many upload workers fit the memory cap maxInFlight: each worker holds
// groupSlots slot buffers plus one compression buffer, all chunkSize bytes. There is always at
// least one worker (a cap below one worker's need is exceeded rather than never uploading) and
// never more than 16.
func uploadWorkers(maxInFlight int64, groupSlots int, chunkSize int64) int {
	perWorker := int64(groupSlots+1) * chunkSize
	return int(max(1, min(maxInFlight/perWorker, 16)))
}
