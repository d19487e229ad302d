//go:build !linux

package restore

import (
	"errors"
	"os"
)

func syncfsSupported(*os.File) (bool, string) {
	return false, "syncfs is Linux only"
}

func syncfs(*os.File) error { return errors.New("syncfs is Linux only") }
