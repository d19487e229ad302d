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
		return r.writeSignal(standbySignal)
	default:
		return fmt.Errorf("check %s: %w", d.full(standbySignal), err)
	}
	if r.o.Standby {
		return nil
	}
	if err := d.root.Remove(standbySignal); err != nil {
		return fmt.Errorf("remove %s: %w", d.full(standbySignal), err)
	}
	if err := r.appendAutoConf("# Added by pgstow restore: the backup was taken from a standby and is restored as a primary (restore --standby keeps it a standby).\nprimary_conninfo = ''\nprimary_slot_name = ''\n"); err != nil {
		return err
	}
	r.fromStandby = true
	r.o.Log.Warn("the backup was taken from a standby: restored as a primary (standby.signal removed, primary_conninfo cleared); restore with --standby to keep it a standby")
	return nil
}
