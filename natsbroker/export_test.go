package natsbroker

// CommitStats returns the confirmation flushes b started and the publishes
// that waited for one.
func CommitStats(b *Broker) (flushes, waits uint64) { return b.commit.stats() }
