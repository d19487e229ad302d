package restore

import (
	"errors"
	"fmt"
	"os"
)

const (
	standbySignal = "standby.signal"
	autoConf      = "postgresql.auto.conf"
)

// setRole decides whether the restored directory starts as a primary or
// a standby. A backup taken from a standby carries its standby.signal and
// the primary_conninfo that pointed it at production: started as it is,
// a disaster-recovery copy would stream from the live primary, which is
// never what a restore means unless asked. So by default standby.signal
// goes and primary_conninfo is cleared; Options.Standby keeps the signal
// (or writes one) and the connection settings.
func (r *restorer) setRole() error {
	d := r.base
	_, err := d.root.Lstat(standbySignal)
	switch {
	case err == nil:
	case errors.Is(err, os.ErrNotExist):
		if !r.o.Standby {
			return nil
		}
		f, err := d.root.OpenFile(standbySignal, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
		if err != nil {
			return fmt.Errorf("create %s: %w", d.full(standbySignal), err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("create %s: %w", d.full(standbySignal), err)
		}
		r.addSync(syncEntry{d: d, path: standbySignal})
		return nil
	default:
		return fmt.Errorf("check %s: %w", d.full(standbySignal), err)
	}
	if r.o.Standby {
		return nil
	}
	if err := d.root.Remove(standbySignal); err != nil {
		return fmt.Errorf("remove %s: %w", d.full(standbySignal), err)
	}
	f, err := d.root.OpenFile(autoConf, os.O_WRONLY|os.O_APPEND|os.O_CREATE, fileMode)
	if err != nil {
		return fmt.Errorf("open %s: %w", d.full(autoConf), err)
	}
	// Appended, so it wins over the setting the standby had; the file
	// normally ends with a newline, and a blank line is harmless.
	_, err = f.WriteString("\n# Added by pgstow restore: the backup was taken from a standby and is restored as a primary (restore --standby keeps it a standby).\nprimary_conninfo = ''\nprimary_slot_name = ''\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", d.full(autoConf), err)
	}
	// Durable before pg_control like everything else (the data
	// directory itself, which lost an entry, is always synced).
	r.addSync(syncEntry{d: d, path: autoConf})
	r.fromStandby = true
	r.o.Log.Warn("the backup was taken from a standby: restored as a primary (standby.signal removed, primary_conninfo cleared); restore with --standby to keep it a standby")
	return nil
}
