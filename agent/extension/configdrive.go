package extension

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/ingot-dev/ingot/shared/api"
	"github.com/ingot-dev/ingot/shared/configdrive"
)

// maxConfigDriveDownload bounds a config drive fetched from a URL: the
// largest drive, base64-encoded, with room for line breaks.
const maxConfigDriveDownload = configdrive.MaxSize/3*4 + 1<<20

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
	if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") {
		var err error
		if data, err = x.fetchConfigDrive(ctx, s, info); err != nil {
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

// fetchConfigDrive downloads a config drive with the image's client (its
// proxies and TLS settings).
func (x *Extensions) fetchConfigDrive(ctx context.Context, url string, info api.ImageInfo) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("config drive URL: %w", err)
	}
	client := x.opts.ImageOptions.HTTPClient(info)
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("downloading the config drive: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return nil, fmt.Errorf("downloading the config drive from %s: HTTP %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxConfigDriveDownload+1))
	if err != nil {
		return nil, fmt.Errorf("downloading the config drive from %s: %w", url, err)
	}
	if len(b) > maxConfigDriveDownload {
		return nil, fmt.Errorf("%w: the download from %s exceeds %d bytes", configdrive.ErrTooLarge, url, maxConfigDriveDownload)
	}
	return b, nil
}
