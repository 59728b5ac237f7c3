// Package blockdev owns the agent's disks: it picks the install disk from
// IPA's root device hints, opens disks (block devices, loop devices or
// plain files standing in for them) for reading and writing, reads the
// partition table (MBR disk identifier, GPT partitions), wipes metadata
// (partition tables and filesystem signatures) and overwrites whole disks
// for cleaning.
//
// Hint matching and partition-table parsing are pure; the few Linux ioctls
// (re-read partition table) sit behind blockdev_linux.go. It never decides
// which disk to write on its own: Select either finds the disk the hints
// describe or fails with ErrNoDevice.
package blockdev
