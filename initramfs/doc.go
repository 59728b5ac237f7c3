// Package initramfs builds the deploy agent's ramdisk: u-root's init plus
// the agent as its uinit, and the kernel modules the agent needs to see
// the machine's NICs and disks, loaded in dependency order.
//
// Debian's kernels build virtio, e1000, AHCI and NVMe as modules and ship
// no modules.dep, and the ramdisk has no udev or modprobe. So the build
// reads each module's .modinfo (depends=, softdep=) itself, orders the
// modules it needs, and stores them as lib/modules/NNN-name.ko: u-root's
// init loads /lib/modules/*.ko in name order before it runs the agent.
//
// The pure part (modinfo parsing, the module list, Resolve) is separate
// from Build, which runs `go tool u-root` at the version go.mod pins and
// compresses the archive reproducibly.
package initramfs
