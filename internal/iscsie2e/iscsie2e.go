// Package iscsie2e holds the end-to-end tests and benchmarks of Ingot's
// iSCSI deploy path: the conductor's initiator (conductor/iscsi) writing
// an image onto the deploy agent's target (agent/iscsitarget), and both
// measured against real peers (tgtd, qemu-img/libiscsi); the iscsi deploy
// interface run by the conductor's engine against the agent's real
// extensions and command API, with faults injected on the agent's disk
// and between the two; and the deploy path benchmarked against the direct
// (agent pulls over HTTP) path. The conductor and the agent may not import
// each other, so their meeting point lives here.
// The package has no code of its own besides this comment.
package iscsie2e
