package restore

// RecoveryEnd says where a server started on the restored directory ends
// its recovery, for a caller that waits until it is there. With embedded
// WAL the server is ready once consistent: neither. With fetched WAL and
// no target it replays every archived segment and then promotes; with a
// target it promotes or pauses there as the target's action says (with
// shutdown it stops instead: neither).
func (o Options) RecoveryEnd() (promotes, pauses bool) {
	if o.WAL != WALFetch {
		return false, false
	}
	if o.Recovery == nil {
		return true, false
	}
	switch o.Recovery.Action {
	case "", "promote":
		return true, false
	case "pause":
		return false, true
	}
	return false, false
}
