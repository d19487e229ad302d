package repository

// Close releases the store the repository reads and writes (its
// connections, for a remote one), so that callers holding only the
// repository never reach for the store to end it.
func (r *Repository) Close() error { return r.store.Close() }
