// Package ingot is the root of the Ingot module: a bare-metal provisioner
// that does the job of OpenStack Ironic and ironic-python-agent. It holds no
// code, only the repository-wide architecture tests (dependency rules and
// package documentation); see README.md for the layout.
package ingot
