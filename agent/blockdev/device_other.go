//go:build !linux

package blockdev

import (
	"errors"
	"os"
)

func rereadPartitions(*os.File) error { return errors.ErrUnsupported }
