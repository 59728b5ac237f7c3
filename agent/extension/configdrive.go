package extension

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ingot-dev/ingot/shared/api"
	"github.com/ingot-dev/ingot/shared/configdrive"
)

// configDrive turns write_image's configdrive argument (a URL, or a
// base64-encoded gzipped image as Ironic sends it) into the image to put
// on the disk, before anything touches the disk: a bad drive fails the
// command and loses nothing. nil means no config drive.
func (x *Extensions) configDrive(ctx context.Context, arg any, info api.ImageInfo) ([]byte, error) {
	var s string
	switch v := arg.(type) {
	case nil:
		return nil, nil
	case string:
		s = v
	default:
		return nil, cmdErr("InvalidCommandParamsError", "Invalid command parameters",
			fmt.Errorf("configdrive must be a URL or a base64-encoded image, not %T (the conductor builds the object form into an image)", arg))
	}
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	data := []byte(s)
	if configdrive.IsURL(s) {
		// With the image's client: its proxies and TLS settings.
		var err error
		if data, err = configdrive.Fetch(ctx, x.opts.ImageOptions.HTTPClient(info), s); err != nil {
			return nil, cmdErr("ImageDownloadError", "Error downloading image", err)
		}
	}
	img, err := configdrive.Decode(data)
	switch {
	case errors.Is(err, configdrive.ErrTooLarge):
		return nil, cmdErr("ConfigDriveTooLargeError", "Config drive is too large", err)
	case err != nil:
		return nil, cmdErr("InvalidCommandParamsError", "Invalid command parameters", fmt.Errorf("configdrive: %w", err))
	}
	return img, nil
}
