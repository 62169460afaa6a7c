package s3

import "time"

// SetLeaseForTest shortens the lease of the store's locks: renewed every `every`, taken over
// after `stale` without renewal.
func SetLeaseForTest(s *Store, every, stale time.Duration) { s.leaseEvery, s.leaseStale = every, stale }

// AbandonLocksForTest stops renewing every lock s holds without releasing any, as the death of
// its process would.
func AbandonLocksForTest(s *Store) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for l := range s.leases {
		close(l.stop)
		<-l.done
		delete(s.leases, l)
	}
}

// SetRemovalTimingForTest shortens the removal window (the slack of its last delete included)
// and the expiry of removal markers.
func SetRemovalTimingForTest(s *Store, window, slack, expiry time.Duration) {
	s.removeWindow, s.removeSlack, s.markerExpiry = window, slack, expiry
}

// SetProbeStaleForTest sets the age past which CleanTemp takes a clock probe for a dead
// process's.
func SetProbeStaleForTest(s *Store, stale time.Duration) { s.probeStale = stale }
