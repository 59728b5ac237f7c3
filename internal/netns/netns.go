// Package netns runs Go code inside a named network namespace (one made
// by `ip netns add`): sockets opened there belong to it and stay in it
// whichever goroutine then uses them. The virtual-node rig and the
// namespace test helper build on it.
package netns

import (
	"fmt"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// Go runs f on a new goroutine whose OS thread entered the namespace
// name. The thread is never switched back; it ends with f. The returned
// channel yields f's error.
func Go(name string, f func() error) <-chan error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread dies with the goroutine
		if unix.Gettid() == unix.Getpid() {
			// The main thread is never terminated, so it must not
			// enter the namespace: hold it while another thread does.
			done <- <-Go(name, f)
			runtime.UnlockOSThread()
			return
		}
		fd, err := unix.Open(filepath.Join("/var/run/netns", name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- fmt.Errorf("open namespace %s: %w", name, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			done <- fmt.Errorf("enter namespace %s: %w", name, err)
			return
		}
		done <- f()
	}()
	return done
}

// Do runs f inside the namespace name and waits for it.
func Do(name string, f func() error) error { return <-Go(name, f) }
